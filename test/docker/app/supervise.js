// PID 1 of the application container: runs server.js and restarts it on SIGHUP the way
// a service manager does: SIGTERM to the old process, wait for it to exit, spawn the new
// one. Each spawn bumps /run/app.generation, which restart-app watches.
"use strict";
const { spawn } = require("node:child_process");
const { writeFileSync } = require("node:fs");

let generation = 0;
let child;
let restarting = false;

function start() {
  child = spawn(process.execPath, [`${__dirname}/server.js`], { stdio: "inherit" });
  generation += 1;
  writeFileSync("/run/app.generation", `${generation} ${child.pid}\n`);
  child.on("exit", (code, signal) => {
    if (!restarting) {
      console.error(`supervise: server.js exited (${signal ?? code}); restarting it`);
      start();
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
  child.kill("SIGTERM");
  child.once("exit", () => process.exit(0));
});
start();
