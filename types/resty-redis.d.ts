// lua-resty-redis 0.27 (Debian ships it as nginx.redis; we install it as resty.redis).
// Every command is a method called with a colon. Replies: a string, number or table;
// a missing value is ngx.null. Failure comes in two forms: (nil, err) when the
// connection failed (close it), and (false, err) when Redis answered with an error
// reply such as "ERR ..." or "WRONGPASS ..." (the connection is still good).
type RedisReply = string | number | NgxNull | RedisReply[];

/** 0.27 passes these straight to tcpsock:connect (no TLS options before 0.28). */
interface RedisConnectOptions {
  pool?: string;
  pool_size?: number;
  backlog?: number;
}

/** A lua-resty-redis connection object (methods are called with a colon). */
interface RestyRedis {
  /** Milliseconds for connect, send and read alike (0.27 has no set_timeouts). */
  set_timeout(this: RestyRedis, ms: number): void;
  /** 1 | nil, err. host may be "unix:/path". */
  connect(this: RestyRedis, host: string, port?: number, options?: RedisConnectOptions): LuaMultiReturn<[1 | undefined, string | undefined]>;
  /** Puts the connection into the cosocket pool. 1 | nil, err */
  set_keepalive(this: RestyRedis, max_idle_ms?: number, pool_size?: number): LuaMultiReturn<[1 | undefined, string | undefined]>;
  /** How many times this connection was reused from the pool. count | nil, err */
  get_reused_times(this: RestyRedis): LuaMultiReturn<[number | undefined, string | undefined]>;
  close(this: RestyRedis): LuaMultiReturn<[1 | undefined, string | undefined]>;

  auth(this: RestyRedis, ...args: string[]): LuaMultiReturn<[RedisReply | false | undefined, string | undefined]>;
  select(this: RestyRedis, db: number): LuaMultiReturn<[RedisReply | false | undefined, string | undefined]>;
  ping(this: RestyRedis): LuaMultiReturn<[RedisReply | false | undefined, string | undefined]>;
  get(this: RestyRedis, key: string): LuaMultiReturn<[string | NgxNull | false | undefined, string | undefined]>;
  set(this: RestyRedis, key: string, ...args: (string | number)[]): LuaMultiReturn<[RedisReply | false | undefined, string | undefined]>;
  /** One value (or ngx.null) per key, in order. */
  mget(this: RestyRedis, ...keys: string[]): LuaMultiReturn<[(string | NgxNull)[] | false | undefined, string | undefined]>;
  del(this: RestyRedis, ...keys: string[]): LuaMultiReturn<[number | false | undefined, string | undefined]>;
  sadd(this: RestyRedis, key: string, ...members: string[]): LuaMultiReturn<[number | false | undefined, string | undefined]>;
  srem(this: RestyRedis, key: string, ...members: string[]): LuaMultiReturn<[number | false | undefined, string | undefined]>;
  smembers(this: RestyRedis, key: string): LuaMultiReturn<[string[] | false | undefined, string | undefined]>;
  hgetall(this: RestyRedis, key: string): LuaMultiReturn<[RedisReply[] | false | undefined, string | undefined]>;
  hset(this: RestyRedis, key: string, ...fieldsAndValues: (string | number)[]): LuaMultiReturn<[number | false | undefined, string | undefined]>;
  pexpire(this: RestyRedis, key: string, ms: number): LuaMultiReturn<[number | false | undefined, string | undefined]>;
  publish(this: RestyRedis, channel: string, message: string): LuaMultiReturn<[number | false | undefined, string | undefined]>;
  eval(this: RestyRedis, script: string, numkeys: number, ...keysAndArgs: (string | number)[]): LuaMultiReturn<[RedisReply | false | undefined, string | undefined]>;
  evalsha(this: RestyRedis, sha: string, numkeys: number, ...keysAndArgs: (string | number)[]): LuaMultiReturn<[RedisReply | false | undefined, string | undefined]>;
  /** Enters subscribe mode: the reply is ["subscribe", channel, count]. */
  subscribe(this: RestyRedis, ...channels: string[]): LuaMultiReturn<[RedisReply[] | false | undefined, string | undefined]>;
  unsubscribe(this: RestyRedis, ...channels: string[]): LuaMultiReturn<[RedisReply[] | undefined, string | undefined]>;
  /** In subscribe mode: ["message", channel, payload] | nil, err ("timeout" when idle). */
  read_reply(this: RestyRedis): LuaMultiReturn<[RedisReply[] | undefined, string | undefined]>;
  init_pipeline(this: RestyRedis, n?: number): void;
  /** replies (an error reply is the table [false, err]) | nil, err */
  commit_pipeline(this: RestyRedis): LuaMultiReturn<[RedisReply[] | undefined, string | undefined]>;
  cancel_pipeline(this: RestyRedis): void;
}

declare module "resty.redis" {
  interface RedisModule {
    readonly _VERSION: string;
    /** red | nil, err */
    new: (this: void) => LuaMultiReturn<[RestyRedis | undefined, string | undefined]>;
  }
  const redis: RedisModule;
  export = redis;
}

// lua-resty-redis-connector 0.06 (Debian: nginx.redis.connector; OpenResty users install
// it as resty.redis.connector). Connects through Redis Sentinel; AUTH (password only, no
// ACL user in 0.06) and SELECT are done on connect.
declare module "resty.redis.connector" {
  interface ConnectorOptions {
    /** Milliseconds. */
    connect_timeout?: number;
    read_timeout?: number;
    keepalive_timeout?: number;
    keepalive_poolsize?: number;
  }

  interface ConnectParams {
    sentinels: { host: string; port: number }[];
    master_name: string;
    role: "master" | "slave";
    db?: number;
    password?: string;
  }

  interface Connector {
    /** redis | nil, err (err may be nil when Sentinel knows no master). */
    connect(this: Connector, params: ConnectParams): LuaMultiReturn<[RestyRedis | undefined, string | undefined]>;
    set_keepalive(this: Connector, redis: RestyRedis): LuaMultiReturn<[1 | undefined, string | undefined]>;
  }

  interface ConnectorModule {
    readonly _VERSION: string;
    /** connector | nil, err */
    new: (this: void, options?: ConnectorOptions) => LuaMultiReturn<[Connector | undefined, string | undefined]>;
  }
  const connector: ConnectorModule;
  export = connector;
}
