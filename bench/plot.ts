// Draws the release timeline of the latest bench run as SVG with Vega-Lite: held,
// queued and in-flight requests through a pause/resume cycle, with the release window;
// and, from bench/results/database.json, one switchover under load with and without
// intermission.
//   node --import tsx bench/plot.ts [bench/results/release.json | bench/results/database.json]
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as vega from "vega";
import { compile, TopLevelSpec } from "vega-lite";
import { describeMachine } from "./provenance.ts";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

export async function plotRelease(resultsFile: string, outFile: string, n = 3000): Promise<void> {
  const results = JSON.parse(readFileSync(resultsFile, "utf8"));
  const run = results.release.find((r: any) => r.n === n) ?? results.release[results.release.length - 1];
  const x = { field: "t", type: "quantitative" as const, title: "ms since the resume call" };
  const resumeRule = { data: { values: [{ t: 0 }] }, mark: { type: "rule" as const, color: "#888" }, encoding: { x: { field: "t", type: "quantitative" as const } } };
  const spec: TopLevelSpec = {
    $schema: "https://vega.github.io/schema/vega-lite/v5.json",
    title: {
      text: `Releasing ${run.n.toLocaleString("en")} held requests`,
      subtitle: `${results.workers} nginx workers, release_window ${results.release_window}, commit ${results.commit.slice(0, 7)}: all released ` +
        `${run.release_ms} ms after resume (the same ${run.n.toLocaleString("en")} as a plain burst: ${run.plain_burst_ms} ms)`,
    },
    background: "white",
    vconcat: [
      {
        width: 640,
        height: 220,
        layer: [
          {
            data: { values: run.timeline },
            mark: { type: "line", interpolate: "step-after", strokeWidth: 2, color: "#1f77b4" },
            encoding: { x: { ...x, title: null }, y: { field: "held", type: "quantitative", title: "held (waiting)" } },
          },
          resumeRule,
        ],
      },
      {
        width: 640,
        height: 140,
        layer: [
          {
            data: { values: run.timeline },
            mark: { type: "line", interpolate: "step-after", strokeWidth: 2, color: "#ff7f0e" },
            encoding: { x, y: { field: "in_flight", type: "quantitative", title: "in flight to the upstream",
              scale: { domain: [0, Math.ceil(results.release_window * 1.5)] } } },
          },
          {
            data: { values: [{ window: results.release_window }] },
            mark: { type: "rule", strokeDash: [6, 4], color: "#d62728" },
            encoding: { y: { field: "window", type: "quantitative" } },
          },
          {
            data: { values: [{ window: results.release_window }] },
            mark: { type: "text", align: "right", dy: -7, color: "#d62728" },
            encoding: { y: { field: "window", type: "quantitative" }, x: { value: 640 },
              text: { value: `release_window = ${results.release_window}` } },
          },
          resumeRule,
        ],
      },
    ],
  };
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: "none" });
  writeFileSync(outFile, await view.toSVG());
  await view.finalize();
}

/**
 * One switchover (M2) under load, without and with intermission: answers per second
 * (200s and failures) by the time they ended, around the maintenance (shaded).
 */
export async function plotSwitchover(resultsFile: string, outFile: string): Promise<void> {
  const results = JSON.parse(readFileSync(resultsFile, "utf8"));
  const m2 = results.runs.filter((r: any) => r.scenario === "M2" && r.timeline);
  const top = Math.max(...m2.flatMap((r: any) => r.timeline.flatMap((p: any) => [p.ok_per_s, p.failed_per_s])));
  const domain = [0, Math.ceil(top / 100) * 100];
  const panel = (r: any) => {
    const label = r.through === "plain" ? "nginx alone" : "inside intermission run";
    const points = r.timeline.flatMap((p: any) => [
      { t: p.t, series: "answered 200", per_s: p.ok_per_s },
      { t: p.t, series: "failed", per_s: p.failed_per_s },
    ]);
    return {
      width: 640,
      height: 170,
      title: { text: `${label}: ${r.failed.toLocaleString("en")} failed of ${r.requests.toLocaleString("en")}, slowest ${r.slowest_ms} ms`, anchor: "start" as const, fontSize: 12 },
      layer: [
        {
          data: { values: [{ from: 0, to: r.maintenance_ms / 1000 }] },
          mark: { type: "rect" as const, color: "#eee" },
          encoding: { x: { field: "from", type: "quantitative" as const }, x2: { field: "to" } },
        },
        {
          data: { values: points },
          mark: { type: "line" as const, interpolate: "step-after" as const, strokeWidth: 1.5 },
          encoding: {
            x: { field: "t", type: "quantitative" as const, title: "seconds since the switchover started (shaded: the maintenance script)" },
            y: { field: "per_s", type: "quantitative" as const, title: "answers per second", scale: { domain } },
            color: { field: "series", type: "nominal" as const, title: null,
              scale: { domain: ["answered 200", "failed"], range: ["#1f77b4", "#d62728"] } },
          },
        },
      ],
    };
  };
  const spec: TopLevelSpec = {
    $schema: "https://vega.github.io/schema/vega-lite/v5.json",
    title: {
      text: "A PostgreSQL switchover under ~300 req/s: stop the primary, promote the replica, move the endpoint",
      subtitle: `${describeMachine(results.machine)}, commit ${results.commit.slice(0, 7)}; 16 connections; answers counted in 250 ms buckets`,
    },
    background: "white",
    vconcat: m2.map(panel),
  };
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: "none" });
  writeFileSync(outFile, await view.toSVG());
  await view.finalize();
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const input = process.argv[2] ?? path.join(ROOT, "bench/results/release.json");
  if (path.basename(input).startsWith("database")) {
    const out = path.join(path.dirname(input), "switchover.svg");
    await plotSwitchover(input, out);
    console.log(`plot: ${path.relative(ROOT, out)}`);
  } else {
    const out = path.join(path.dirname(input), "release-timeline.svg");
    await plotRelease(input, out);
    console.log(`plot: ${path.relative(ROOT, out)}`);
  }
}
