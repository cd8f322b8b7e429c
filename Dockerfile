# An OpenResty-compatible image from Debian bookworm: nginx 1.22 with lua-nginx-module
# 0.10.23, lua-resty-core 0.1.25, lua-cjson, lua-resty-redis 0.27 and
# lua-resty-redis-connector (Sentinel). Debian installs the last two as nginx.redis*;
# they are linked under the resty.* names that OpenResty uses. lua-nginx-redis pulls in
# nginx-extras; only lua-nginx-module (and NDK) stay enabled, as in OpenResty: nchan 1.3.6
# kills the worker (SIGSEGV) when worker_shutdown_timeout cuts off a request.
FROM debian:bookworm-slim

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      nginx libnginx-mod-http-lua lua-resty-core lua-cjson \
      lua-nginx-redis lua-nginx-redis-connector \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s ../nginx/redis.lua /usr/share/lua/5.1/resty/redis.lua \
 && mkdir -p /usr/share/lua/5.1/resty/redis \
 && ln -s ../../nginx/redis/connector.lua /usr/share/lua/5.1/resty/redis/connector.lua \
 && ln -s ../../nginx/redis/sentinel.lua /usr/share/lua/5.1/resty/redis/sentinel.lua \
 && rm -f /etc/nginx/sites-enabled/default \
 && find /etc/nginx/modules-enabled -name '*.conf' ! -name '10-mod-http-ndk.conf' ! -name '50-mod-http-lua.conf' -delete \
 && ln -sf /dev/stderr /var/log/nginx/intermission-error.log \
 && ln -sf /dev/stdout /var/log/nginx/intermission-access.log

COPY dist/  /opt/intermission/dist/
COPY nginx/ /opt/intermission/nginx/

EXPOSE 8080
# SIGQUIT is nginx's graceful stop: held requests are not cut off.
STOPSIGNAL SIGQUIT
CMD ["nginx", "-c", "/opt/intermission/nginx/nginx.conf", "-g", "daemon off;"]
