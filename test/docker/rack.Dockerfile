# A Rack application for test/not-applied-rack.test.ts: Debian's Ruby 3.1, Rack 2.2 and
# WEBrick, nothing else. The test copies the application (config.ru) and the middleware
# it tests (examples/not_applied.rb) in when it starts a container, so this image never
# needs a rebuild for them. Built by scripts/images.sh.
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ruby ruby-rack ruby-webrick \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
EXPOSE 9292
CMD ["rackup", "-s", "webrick", "-o", "0.0.0.0", "-p", "9292", "/app/config.ru"]
