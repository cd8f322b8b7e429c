// PID 1 of the application container: runs server.js and restarts it on SIGHUP the way
// a service manager does: SIGTERM to the old process, wait for it to exit, spawn the new
// one. Each spawn bumps /run/app.generation, which restart-app watches. A process that
// dies on its own (a crash, kill-app) is started again APP_RESTART_DELAY_MS later
// (default 0), as a supervisor's restart delay (systemd RestartSec=) does.
"use strict";
const { spawn } = require("node:child_process");
const { writeFileSync } = require("node:fs");

let generation = 0;
let child;
let restarting = false;
let stopping = false;
const RESTART_DELAY_MS = Number(process.env.APP_RESTART_DELAY_MS ?? 0);

function start() {
  child = spawn(process.execPath, [`${__dirname}/server.js`], { stdio: "inherit" });
  generation += 1;
  writeFileSync("/run/app.generation", `${generation} ${child.pid}\n`);
  child.on("exit", (code, signal) => {
    if (!restarting && !stopping) {
      console.error(`supervise: server.js exited (${signal ?? code}); restarting it in ${RESTART_DELAY_MS} ms`);
      setTimeout(() => stopping || start(), RESTART_DELAY_MS);
    }
  });
}

process.on("SIGHUP", () => {
  if (restarting) return;
  restarting = true;
  child.once("exit", () => {
    restarting = false;
    start();
  });
  child.kill("SIGTERM");
});
process.on("SIGTERM", () => {
  stopping = true;
  if (child.exitCode !== null || child.signalCode !== null) process.exit(0);
  child.kill("SIGTERM");
  child.once("exit", () => process.exit(0));
});
start();
