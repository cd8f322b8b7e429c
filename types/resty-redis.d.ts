// lua-resty-redis 0.27 (Debian ships it as nginx.redis; we install it as resty.redis).
// Every command is a method called with a colon. Replies: a string, number or table;
// a missing value is ngx.null. Failure comes in two forms: (nil, err) when the
// connection failed (close it), and (false, err) when Redis answered with an error
// reply such as "ERR ..." or "WRONGPASS ..." (the connection is still good).
declare module "resty.redis" {
  type RedisReply = string | number | NgxNull | RedisReply[];

  /** 0.27 passes these straight to tcpsock:connect (no TLS options before 0.28). */
  interface RedisConnectOptions {
    pool?: string;
    pool_size?: number;
    backlog?: number;
  }

  interface Redis {
    /** Milliseconds for connect, send and read alike (0.27 has no set_timeouts). */
    set_timeout(this: Redis, ms: number): void;
    /** 1 | nil, err. host may be "unix:/path". */
    connect(this: Redis, host: string, port?: number, options?: RedisConnectOptions): LuaMultiReturn<[1 | undefined, string | undefined]>;
    /** Puts the connection into the cosocket pool. 1 | nil, err */
    set_keepalive(this: Redis, max_idle_ms?: number, pool_size?: number): LuaMultiReturn<[1 | undefined, string | undefined]>;
    /** How many times this connection was reused from the pool. count | nil, err */
    get_reused_times(this: Redis): LuaMultiReturn<[number | undefined, string | undefined]>;
    close(this: Redis): LuaMultiReturn<[1 | undefined, string | undefined]>;

    auth(this: Redis, ...args: string[]): LuaMultiReturn<[RedisReply | false | undefined, string | undefined]>;
    select(this: Redis, db: number): LuaMultiReturn<[RedisReply | false | undefined, string | undefined]>;
    ping(this: Redis): LuaMultiReturn<[RedisReply | false | undefined, string | undefined]>;
    get(this: Redis, key: string): LuaMultiReturn<[string | NgxNull | false | undefined, string | undefined]>;
    set(this: Redis, key: string, ...args: (string | number)[]): LuaMultiReturn<[RedisReply | false | undefined, string | undefined]>;
    del(this: Redis, ...keys: string[]): LuaMultiReturn<[number | false | undefined, string | undefined]>;
    sadd(this: Redis, key: string, ...members: string[]): LuaMultiReturn<[number | false | undefined, string | undefined]>;
    srem(this: Redis, key: string, ...members: string[]): LuaMultiReturn<[number | false | undefined, string | undefined]>;
    smembers(this: Redis, key: string): LuaMultiReturn<[string[] | false | undefined, string | undefined]>;
    hgetall(this: Redis, key: string): LuaMultiReturn<[RedisReply[] | false | undefined, string | undefined]>;
    hset(this: Redis, key: string, ...fieldsAndValues: (string | number)[]): LuaMultiReturn<[number | false | undefined, string | undefined]>;
    pexpire(this: Redis, key: string, ms: number): LuaMultiReturn<[number | false | undefined, string | undefined]>;
    publish(this: Redis, channel: string, message: string): LuaMultiReturn<[number | false | undefined, string | undefined]>;
    eval(this: Redis, script: string, numkeys: number, ...keysAndArgs: (string | number)[]): LuaMultiReturn<[RedisReply | false | undefined, string | undefined]>;
    evalsha(this: Redis, sha: string, numkeys: number, ...keysAndArgs: (string | number)[]): LuaMultiReturn<[RedisReply | false | undefined, string | undefined]>;
    /** Enters subscribe mode: the reply is ["subscribe", channel, count]. */
    subscribe(this: Redis, ...channels: string[]): LuaMultiReturn<[RedisReply[] | false | undefined, string | undefined]>;
    unsubscribe(this: Redis, ...channels: string[]): LuaMultiReturn<[RedisReply[] | undefined, string | undefined]>;
    /** In subscribe mode: ["message", channel, payload] | nil, err ("timeout" when idle). */
    read_reply(this: Redis): LuaMultiReturn<[RedisReply[] | undefined, string | undefined]>;
    init_pipeline(this: Redis, n?: number): void;
    /** replies (each may be [false, err]) | nil, err */
    commit_pipeline(this: Redis): LuaMultiReturn<[RedisReply[] | undefined, string | undefined]>;
    cancel_pipeline(this: Redis): void;
  }

  interface RedisModule {
    readonly _VERSION: string;
    /** red | nil, err */
    new: (this: void) => LuaMultiReturn<[Redis | undefined, string | undefined]>;
  }
  const redis: RedisModule;
  export = redis;
}
