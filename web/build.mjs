// Builds the static page into dist/: one bundled, minified script (livekit-client included)
// plus the HTML and CSS as they are. dist/ is what the page server serves; it is rebuilt,
// never committed.
import { build } from "esbuild";
import { cpSync, mkdirSync, rmSync } from "node:fs";

const out = new URL("./dist/", import.meta.url).pathname;
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
await build({
  entryPoints: ["src/main.ts"],
  bundle: true,
  format: "esm",
  target: ["chrome110", "firefox115", "safari16"],
  minify: true,
  sourcemap: true,
  outfile: `${out}app.js`,
  logLevel: "warning",
});
for (const file of ["index.html", "style.css"]) cpSync(`src/${file}`, `${out}${file}`);
console.log(`built ${out}`);
