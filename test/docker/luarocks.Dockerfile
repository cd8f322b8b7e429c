# The test image with intermission installed by LuaRocks instead of copied: Debian's
# luarocks runs `luarocks make` into a fresh tree, /opt/rocks, offline (--only-server
# names an empty directory, so nothing can be fetched), and the image's copy of dist/ is
# removed, so a node can only load intermission from that tree. Built by
# scripts/images.sh; the tests use it with INTERMISSION_INSTALL=luarocks.
# Build context: the repository root.
ARG BASE=intermission:latest
FROM ${BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends luarocks \
 && rm -rf /var/lib/apt/lists/*
COPY intermission-*.rockspec /src/
COPY rocks/ /src/rocks/
COPY dist/ /src/dist/
COPY nginx/ /src/nginx/
RUN cd /src && mkdir /tmp/no-server \
 && luarocks --only-server=/tmp/no-server --tree /opt/rocks make \
 && export LUAROCKS_CONFIG=/src/rocks/debian-provided.lua \
 && luarocks --only-server=/tmp/no-server --tree /opt/rocks make rocks/intermission-fleet-*.rockspec \
 && luarocks --only-server=/tmp/no-server --tree /opt/rocks make rocks/intermission-sentinel-*.rockspec \
 && luarocks --tree /opt/rocks list \
 && rm -rf /src /tmp/no-server /opt/intermission
