# The application and the floating endpoint of the real-database tests and the demo,
# on Debian's Node.js. node_modules/ (pg, from test/docker/app/package-lock.json) is
# installed on the host by scripts/images.sh, so the image needs no npm.
#   default command: the application (supervised, restartable with restart-app, killable
#   with kill-app); not-applied.mjs is examples/not-applied.mjs, copied by scripts/images.sh
#   node /app/endpoint.js HOST:PORT: the floating endpoint
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs \
 && rm -rf /var/lib/apt/lists/*
COPY . /app/
RUN ln -s /app/restart-app /app/kill-app /app/move-endpoint /usr/local/bin/
EXPOSE 3000 5432
STOPSIGNAL SIGTERM
CMD ["node", "/app/supervise.js"]
