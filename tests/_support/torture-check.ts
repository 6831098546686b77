/**
 * The checker child of the kill -9 torture: opens the store a killed writer
 * left (read-only, so it recovers in memory and leaves the on-disk recovery
 * to the next writer, where a kill can interrupt it too), reads every key
 * (values through get(), blobs through openBlob(), both verified), runs
 * store.check(), and prints one JSON line for the parent to hold against
 * its model:
 *
 *   node dist/tests/_support/torture-check.js STORE
 *   deno run -A tests/_support/torture-check.ts STORE
 *
 *   {"lastTxid":"12","content":[[3,"17:9a0b..."],...],"foreign":[],"problems":[]}
 *   {"error":"IntegrityError: ..."}          when the store does not open or read
 */
import process from "node:process";
import { writeSync } from "node:fs";
import { open } from "../../mod.ts";
import { observeStoreWithBlobs } from "./torture-model.ts";

function print(value: unknown): void {
  const bytes = new TextEncoder().encode(JSON.stringify(value) + "\n");
  let done = 0;
  while (done < bytes.length) done += writeSync(1, bytes, done, bytes.length - done);
}

async function main(): Promise<void> {
  const path = process.argv[2];
  if (!path) {
    process.stderr.write("usage: torture-check STORE\n");
    process.exit(2);
  }
  let store;
  try {
    store = open(path, { readOnly: true, lockTimeout: 5000 });
  } catch (e) {
    print({ error: `open: ${(e as Error).stack}` });
    return;
  }
  try {
    const observed = await observeStoreWithBlobs(store);
    const report = await store.check();
    print({
      lastTxid: String(observed.lastTxid),
      content: [...observed.content],
      foreign: observed.foreign,
      problems: report.problems.map((p) => `${p.kind}: ${p.message}`),
    });
  } catch (e) {
    print({ error: `read: ${(e as Error).stack}` });
  } finally {
    store.close();
  }
}

await main();
