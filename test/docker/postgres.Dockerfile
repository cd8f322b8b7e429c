# PostgreSQL 15 from Debian's packages, for the real-database tests and the demo. One
# image, two roles (PG_ROLE): a primary (initdb, a replication user, the app's table) or
# a streaming replica of PG_PRIMARY (pg_basebackup -R). tini is PID 1 so that postgres
# can be stopped, restarted and promoted with pg_ctl without ending the container.
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 tini \
 && rm -rf /var/lib/apt/lists/*
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
COPY . /usr/local/bin/
EXPOSE 5432
ENTRYPOINT ["tini", "--"]
CMD ["pg-start"]
