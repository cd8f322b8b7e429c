// Draws the release timeline of the latest bench run as SVG with Vega-Lite: held,
// queued and in-flight requests through a pause/resume cycle, with the release window.
//   node --import tsx bench/plot.ts [bench/results/latest.json]
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as vega from "vega";
import { compile, TopLevelSpec } from "vega-lite";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

export async function plotRelease(resultsFile: string, outFile: string, n = 3000): Promise<void> {
  const results = JSON.parse(readFileSync(resultsFile, "utf8"));
  const run = results.release.find((r: any) => r.n === n) ?? results.release[results.release.length - 1];
  const series: { t: number; count: number; series: string }[] = [];
  for (const p of run.timeline) {
    series.push({ t: p.t, count: p.held, series: "held (waiting)" });
    series.push({ t: p.t, count: p.in_flight, series: "in flight to the upstream" });
  }
  const spec: TopLevelSpec = {
    $schema: "https://vega.github.io/schema/vega-lite/v5.json",
    title: {
      text: `Releasing ${run.n.toLocaleString("en")} held requests`,
      subtitle: `${results.workers} nginx workers, release_window ${results.release_window}; ` +
        `all released ${run.release_ms} ms after resume (a plain burst of the same: ${run.plain_burst_ms} ms)`,
    },
    width: 640,
    height: 300,
    background: "white",
    layer: [
      {
        data: { values: series },
        mark: { type: "line", interpolate: "step-after", strokeWidth: 2 },
        encoding: {
          x: { field: "t", type: "quantitative", title: "ms since the resume call" },
          y: { field: "count", type: "quantitative", title: "requests" },
          color: { field: "series", type: "nominal", title: null, legend: { orient: "top-right" } },
        },
      },
      {
        data: { values: [{ window: results.release_window }] },
        mark: { type: "rule", strokeDash: [6, 4], color: "#d62728" },
        encoding: { y: { field: "window", type: "quantitative" } },
      },
      {
        data: { values: [{ window: results.release_window, t: 0 }] },
        mark: { type: "text", align: "left", dy: -8, color: "#d62728" },
        encoding: {
          x: { field: "t", type: "quantitative" },
          y: { field: "window", type: "quantitative" },
          text: { value: `release_window = ${results.release_window}` },
        },
      },
      {
        data: { values: [{ t: 0 }] },
        mark: { type: "rule", color: "#555" },
        encoding: { x: { field: "t", type: "quantitative" } },
      },
    ],
  };
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: "none" });
  writeFileSync(outFile, await view.toSVG());
  await view.finalize();
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const input = process.argv[2] ?? path.join(ROOT, "bench/results/latest.json");
  const out = path.join(path.dirname(input), "release-timeline.svg");
  await plotRelease(input, out);
  console.log(`plot: ${path.relative(ROOT, out)}`);
}
