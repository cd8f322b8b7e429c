// resty.core.base (lua-resty-core 0.1.25): only what intermission uses.

/** The current request's ngx_http_request_t*: a light userdata, or with OpenResty's
 * LuaJIT (thread.exdata) a `void *` cdata, a new object on every call (so not a table
 * key: cast it to a number). The pointer is the same for the whole request, across
 * internal redirects (error_page, try_files, ngx.exec), unlike ngx.ctx. */
declare const enum NgxRequestBrand {}
type NgxRequest = NgxRequestBrand & { readonly __ngxRequest: unique symbol };

declare module "resty.core.base" {
  /** The current request, or nil outside a request (init, timers). */
  export function get_request(this: void): NgxRequest | undefined;
}
