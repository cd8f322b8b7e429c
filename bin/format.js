function when(epochSeconds) {
    if (epochSeconds === undefined)
        return "-";
    const d = new Date(epochSeconds * 1000);
    return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}
/** The scope a node answered for; `default` is the whole node (every scope not stopped itself). */
export function scopeLabel(body) {
    if (typeof body?.scope !== "string")
        return "-";
    return body.applies_to === "node" ? `${body.scope} (whole node)` : body.scope;
}
export function table(results) {
    const head = ["node", "scope", "state", "held", "queued", "in flight", "since", "until", "reason"];
    const rows = results.map((r) => {
        if (!r.ok)
            return [r.url, "-", r.applied === "unknown" ? "UNKNOWN" : "ERROR", "-", "-", "-", "-", "-", "(see below)"];
        const b = r.body;
        let state = b.draining ? "running (draining)" : String(b.state);
        // A scope that runs while the whole node is paused: its requests are held all the same.
        if (b.applies_to === "scope" && b.state === "running" && typeof b.node_state === "string" && b.node_state !== "running") {
            state = `${b.node_state} (whole node)`;
        }
        return [r.url, scopeLabel(b), state, String(b.held ?? "-"), String(b.queued ?? "-"), String(b.in_flight ?? "-"),
            when(b.since), when(b.until), b.reason ?? ""];
    });
    const all = [head, ...rows];
    const widths = head.map((_, c) => Math.max(...all.map((r) => r[c].length)));
    return all.map((r) => r.map((v, c) => v.padEnd(widths[c])).join("  ").trimEnd()).join("\n");
}
export function json(value) {
    return JSON.stringify(value, null, 2);
}
