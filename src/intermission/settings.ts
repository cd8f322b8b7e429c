// The active configuration. setup() replaces it in the master (init_by_lua), and every
// worker forks with it; nothing changes it afterwards.
import { Config, defaults } from "./config";
export type { ReadyProbe } from "./config";

export const settings: { cfg: Config; ready: boolean } = { cfg: defaults(), ready: false };
