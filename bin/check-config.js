// intermission check-config: would nginx start with this configuration's setup() options?
// `nginx -t` cannot say: lua-nginx-module does not run init_by_lua when nginx only tests
// its configuration, so a bad option passes `nginx -t` and then fails the start, or the
// reload (which keeps the old workers serving the old configuration).
//
// So this runs the configuration's Lua start-up for real, in a throwaway nginx that
// serves nothing: `nginx -T` checks the syntax and hands over every file nginx read; from
// them a new configuration keeps only load_module and env at the top, and the http block's
// lua_* directives (package path, shared dicts, ...) and init_by_lua*, copied verbatim. No
// server, no listening socket, no worker process, no pid or log file of the real nginx.
// An init_worker_by_lua of its own reports that init_by_lua got through, and exits.
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { ConfError, expand, splitDump } from "./nginx-conf.js";
const MARK = "intermission check-config: init_by_lua finished";
const keptAtTop = (d) => !d.children && (d.name === "load_module" || d.name === "env");
const keptInHttp = (d) => !d.children && (d.name.startsWith("lua_") || /^init_by_lua(_block|_file)?$/.test(d.name));
/** The throwaway configuration's name, distinct from any user's nginx.conf in nginx's messages. */
export const THROWAWAY = "check-config.conf";
/** The configuration that runs `conf`'s init_by_lua and nothing else, and where its lines came from. */
export function throwawayConfig(top, dir, source) {
    const http = top.filter((d) => d.name === "http" && d.children).flatMap((d) => d.children.filter(keptInHttp));
    const lines = [];
    const origins = [];
    const add = (text, indent = "") => lines.push(...text.split("\n").map((l, i) => (i === 0 ? indent + l : l)));
    // Copied verbatim (line breaks included), so line k of a directive is line k of its source.
    const copy = (d, indent = "") => {
        const from = lines.length + 1;
        add(d.raw, indent);
        origins.push({ from, to: lines.length, file: d.file, line: d.line });
    };
    add(`# intermission check-config: the Lua start-up of ${source}, serving nothing.
daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log stderr warn;`);
    top.filter(keptAtTop).forEach((d) => copy(d));
    add(`events { worker_connections 16; }
http {
    access_log off;`);
    http.forEach((d) => copy(d, "    "));
    add(`    init_worker_by_lua_block {
        io.stderr:write("${MARK}\\n")
        os.exit(0)
    }
}
`);
    return { text: lines.join("\n"), inits: http.filter((d) => d.name.startsWith("init_by_lua")).length, origins };
}
/**
 * nginx's message with the throwaway configuration's places (`init_by_lua(check-config.conf:18)`,
 * `in /tmp/.../check-config.conf:18`) replaced by the user's file and line.
 */
export function citeSource(message, origins) {
    const name = THROWAWAY.replace(/[.]/g, "\\.");
    return message.replace(new RegExp(`(/[^\\s:()]*/)?${name}:(\\d+)`, "g"), (whole, _dir, n) => {
        const at = Number(n);
        const o = origins.find((o) => at >= o.from && at <= o.to);
        return o ? `${o.file}:${o.line + at - o.from}` : whole;
    });
}
/**
 * Maps of intermission's variables that never apply. intermission.conf gives the
 * $intermission_* variables an empty default with `map`; nginx keeps the last `map` of a
 * variable and says nothing, so a user's own map written before that include is dead.
 */
export function deadMaps(top) {
    const last = new Map();
    const dead = [];
    const maps = top.filter((d) => d.name === "http" && d.children)
        .flatMap((d) => d.children.filter((c) => c.name === "map" && c.children && c.args.length === 2));
    for (const m of maps) {
        const v = m.args[1];
        if (!/^\$(intermission_|app_name$)/.test(v))
            continue;
        const before = last.get(v);
        // intermission.conf's own `map "" $v { default ""; }` is there to be replaced.
        const emptyDefault = (d) => d.args[0] === "" && d.children.length === 1 &&
            d.children[0].name === "default" && d.children[0].args.length === 1 && d.children[0].args[0] === "";
        if (before && !emptyDefault(before))
            dead.push(`${before.file}:${before.line}: this map of ${v} never applies: the map at ` +
                `${m.file}:${m.line} replaces it (nginx keeps a variable's last map, silently); write yours after the include of intermission.conf`);
        last.set(v, m);
    }
    return dead;
}
/** nginx's own lines worth showing: errors first, else everything it said. */
function nginxSays(output) {
    const lines = output.split("\n").map((l) => l.trim()).filter((l) => l !== "" && !l.includes(MARK));
    const serious = lines.filter((l) => /\[(emerg|alert|crit|error)\]/.test(l));
    return serious.length > 0 ? serious : lines;
}
export function checkConfig(o, log) {
    // Paths the user typed are relative to where they typed them. nginx would take a
    // relative -c from its prefix (/usr/share/nginx/nginx/short.conf) and this runs nginx in /.
    const prefix = o.prefix === undefined ? undefined : path.resolve(o.prefix);
    const confFile = o.conf === undefined ? undefined : path.resolve(o.conf);
    const common = prefix ? ["-p", prefix] : [];
    const opts = { encoding: "utf8", timeout: o.timeout * 1000, maxBuffer: 64 * 1024 * 1024, cwd: "/" };
    const dump = spawnSync(o.nginx, [...common, ...(confFile ? ["-c", confFile] : []), "-T"], opts);
    if (dump.error) {
        log(`cannot run ${o.nginx}: ${dump.error.message}`);
        return 1;
    }
    const name = confFile ?? "nginx's default configuration";
    if (dump.status !== 0) {
        log(`${name}: nginx -t fails:`);
        for (const l of nginxSays(dump.stderr))
            log(`  ${l}`);
        return 1;
    }
    const files = splitDump(dump.stdout);
    const main = [...files.keys()][0];
    if (main === undefined) {
        log(`${name}: nginx -T printed no configuration file`);
        return 1;
    }
    log(`${main}: syntax ok (nginx -t)`);
    let top;
    try {
        top = expand(files, main);
    }
    catch (e) {
        if (!(e instanceof ConfError))
            throw e;
        log(`${main}: cannot read it: ${e.message}`);
        return 1;
    }
    const dead = deadMaps(top);
    if (dead.length > 0) {
        for (const l of dead)
            log(l);
        return 1;
    }
    const dir = mkdtempSync(path.join(os.tmpdir(), "intermission-check-"));
    try {
        const { text, inits, origins } = throwawayConfig(top, dir, main);
        if (inits === 0) {
            log(`${main}: no init_by_lua in the http block, so nothing calls require("intermission").setup()`);
            return 1;
        }
        const conf = path.join(dir, THROWAWAY);
        writeFileSync(conf, text);
        const run = spawnSync(o.nginx, [...common, "-e", "stderr", "-c", conf], opts);
        const output = `${run.stdout ?? ""}\n${run.stderr ?? ""}`;
        if (run.status === 0 && output.includes(MARK)) {
            log(`${main}: init_by_lua runs: setup() accepts its options`);
            for (const l of nginxSays(run.stderr).filter((l) => /\[warn\]/.test(l)))
                log(`  ${citeSource(l, origins)}`);
            return 0;
        }
        if (run.error && run.error.code === "ETIMEDOUT") {
            log(`${main}: init_by_lua did not finish within ${o.timeout}s`);
            return 1;
        }
        log(`${main}: init_by_lua fails, so nginx would not start with this configuration ` +
            `(a reload with it fails too, and the old workers keep serving the old one):`);
        for (const l of nginxSays(output))
            log(`  ${citeSource(l, origins)}`);
        return 1;
    }
    finally {
        rmSync(dir, { recursive: true, force: true });
    }
}
