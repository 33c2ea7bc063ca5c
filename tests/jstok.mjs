// js-tiktoken driver for the tests and the benchmark.
//   node jstok.mjs <js-tiktoken dir>                 stdin: JSON array of strings
//                                                    stdout: JSON array of id arrays
//   node jstok.mjs <js-tiktoken dir> --bench <file>  stdout: {"bytes", "tokens", "seconds"} (best of 3)
// Encodes with ranks "gpt2" and every special token allowed (the literal
// "<|endoftext|>" is its id, as in the extension).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const dir = process.argv[2];
const load = (p) => import(pathToFileURL(join(dir, p)).href);
const { Tiktoken } = await load("dist/lite.js");
const ranks = (await load("dist/ranks/gpt2.js")).default;
const enc = new Tiktoken(ranks);

if (process.argv[3] === "--bench") {
  const text = readFileSync(process.argv[4], "utf8");
  const bytes = Buffer.byteLength(text, "utf8");
  let n = 0;
  let seconds = Infinity; // best of 3: the first run includes JIT warm-up
  for (let i = 0; i < 3; i++) {
    const t0 = process.hrtime.bigint();
    n = enc.encode(text, "all").length;
    seconds = Math.min(seconds, Number(process.hrtime.bigint() - t0) / 1e9);
  }
  process.stdout.write(JSON.stringify({ bytes, tokens: n, seconds }));
} else {
  const texts = JSON.parse(readFileSync(0, "utf8"));
  process.stdout.write(JSON.stringify(texts.map((s) => enc.encode(s, "all"))));
}
