// The Grafana dashboard queries only what /metrics exports: every metric name, every
// label it matches or groups by, and every label value it asks for by equality exist on
// a real node that has held, released and timed out requests.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { NginxNode, ROOT } from "./harness/node.ts";

/** Labels Prometheus adds when it scrapes, so no node exports them. */
const SCRAPE_LABELS = new Set(["instance", "job"]);

interface Series { name: string; labels: Record<string, string> }

function parseExposition(text: string): Series[] {
  const series: Series[] = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? \S+$/);
    assert.ok(m, `not a Prometheus sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const [, k, v] of (m[2] ?? "").matchAll(/([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g)) labels[k] = v;
    series.push({ name: m[1], labels });
  }
  return series;
}

/** Every PromQL expression in the dashboard: panel targets and template variable queries. */
function queries(dashboard: any): string[] {
  const out: string[] = [];
  const walk = (panels: any[]) => {
    for (const p of panels ?? []) {
      for (const t of p.targets ?? []) out.push(t.expr);
      walk(p.panels);
    }
  };
  walk(dashboard.panels);
  for (const v of dashboard.templating.list) if (v.type === "query") out.push(v.query.query ?? v.query);
  return out;
}

/** Fails unless every query uses only exported metrics, labels and label values; returns the number of checks. */
function checkQueries(dashboard: any, exported: Series[]): number {
  const names = new Set(exported.map((s) => s.name));
  let checked = 0;
  for (const expr of queries(dashboard)) {
    const selectors = [...expr.matchAll(/\b([a-z_:][a-z0-9_:]*)\s*(?:\{([^}]*)\})?/g)]
      .filter(([, name]) => name.startsWith("intermission_"));
    assert.ok(selectors.length > 0, `no intermission metric in ${expr}`);
    const used: Series[] = [];
    for (const [, name, matchers] of selectors) {
      assert.ok(names.has(name), `${name} (in ${expr}) is not exported; exported: ${[...names].join(", ")}`);
      const series = exported.filter((s) => s.name === name);
      used.push(...series);
      for (const [, label, op, value] of (matchers ?? "").matchAll(/(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"/g)) {
        if (SCRAPE_LABELS.has(label)) continue;
        assert.ok(series.some((s) => label in s.labels), `${name} has no label ${label} (in ${expr})`);
        if ((op === "=" || op === "!=") && !value.includes("$")) {
          assert.ok(series.some((s) => s.labels[label] === value), `${name}{${label}="${value}"} is never exported (in ${expr})`);
        }
        checked++;
      }
      checked++;
    }
    for (const [, list] of expr.matchAll(/\bby\s*\(([^)]*)\)/g)) {
      for (const label of list.split(",").map((l) => l.trim()).filter(Boolean)) {
        if (SCRAPE_LABELS.has(label)) continue;
        assert.ok(used.some((s) => label in s.labels), `grouping by ${label}, which none of its metrics has (in ${expr})`);
      }
    }
    for (const [, label] of expr.matchAll(/label_values\(\s*\w+\s*,\s*(\w+)\s*\)/g)) {
      if (!SCRAPE_LABELS.has(label)) assert.ok(used.some((s) => label in s.labels), `label_values of ${label} (in ${expr})`);
    }
  }
  return checked;
}

describe("Grafana dashboard", () => {
  let node: NginxNode;
  const dashboard = JSON.parse(readFileSync(path.join(ROOT, "grafana/intermission.json"), "utf8"));
  let exported: Series[];

  before(async () => {
    node = await NginxNode.start();
    // Give every family series: a released request and one that times out in /short/.
    assert.equal((await node.control("pause")).status, 200);
    const released = node.send("/?id=r");
    const timedOut = node.send("/short/?id=t");
    await node.held(2);
    assert.equal((await timedOut.reply).status, 503);
    assert.equal((await node.control("resume")).status, 200);
    assert.equal((await released.reply).status, 200);
    const metrics = await node.control("metrics");
    assert.equal(metrics.status, 200);
    exported = parseExposition(metrics.body);
  });
  after(async () => node?.stop());

  it("is a dashboard with a datasource variable and panels that use it", () => {
    assert.equal(dashboard.uid, "intermission");
    assert.ok(dashboard.templating.list.some((v: any) => v.type === "datasource" && v.name === "datasource"));
    assert.ok(dashboard.panels.length >= 8);
    for (const p of dashboard.panels) {
      assert.equal(p.datasource?.uid, "${datasource}", p.title);
      assert.ok(p.targets?.length > 0, `${p.title}: no query`);
    }
    const titles = dashboard.panels.map((p: any) => p.title).join(" | ");
    for (const topic of [/State per scope/, /Held/, /queued/i, /In flight/, /Outcomes/, /Hold duration/, /Release progress/]) {
      assert.match(titles, topic);
    }
  });

  it("queries only metrics, labels and label values that /metrics exports", () => {
    const checked = checkQueries(dashboard, exported);
    assert.ok(checked > 30, `only ${checked} checks ran`);
  });

  it("would catch a misspelt metric, label value or grouping label", () => {
    const mutate = (from: string, to: string) => JSON.parse(JSON.stringify(dashboard).split(from).join(to));
    assert.throws(() => checkQueries(mutate("intermission_hold_duration_seconds_bucket", "intermission_hold_seconds_bucket"), exported),
      /intermission_hold_seconds_bucket .* is not exported/);
    assert.throws(() => checkQueries(mutate('outcome=\\"timed_out\\"', 'outcome=\\"timeout\\"'), exported),
      /outcome="timeout"\} is never exported/);
    assert.throws(() => checkQueries(mutate("by (outcome)", "by (result)"), exported), /grouping by result/);
  });

  it("leaves a clean error.log", async () => {
    await node.assertCleanLog();
  });
});
