/**
 * The writer child of the kill -9 torture (tests/91.torture, scripts/torture.mjs):
 * runs a seeded random workload on a real store through the runtime's
 * adapter until it is killed, and tells the parent, one line per event on
 * stdout, what it is about to do and what was acknowledged:
 *
 *   node dist/tests/_support/torture-writer.js STORE SEED
 *   deno run -A tests/_support/torture-writer.ts STORE SEED
 *
 * Lines (each written whole with one synchronous write, so a kill leaves
 * either the whole line or none of it... or a cut line, which the parent
 * ignores: a line is only acted on once its newline arrived):
 *   ready TXID            the store is open (after recovery); TXID its last transaction
 *   begin TXID EFFECTS    commit() is about to be called; EFFECTS is JSON [[key, digest | null], ...]
 *   ok TXID               commit() returned TXID: acknowledged
 *   compact TXID          compact() is about to be called (TXID: the last before it)
 *   compacted TXID        compact() returned; the store's last transaction is TXID
 *   reopen                close() then open() again (a clean close: a checkpoint)
 * A "begin" is always written in full before commit() starts, so when the
 * parent has not seen it, the commit had not begun.
 *
 * The workload: transactions of 1..12 operations over KEYS keys: puts of
 * values from 0 bytes to 48 KiB (segments are 64 KiB, so commits roll),
 * overwrites, deletes, blobs (a few KiB to 256 KiB, streamed in chunks,
 * now and then one past 9 MiB, hashed partly on a worker),
 * blob overwrites and deletes; now and then a rollback, a compact(), a
 * close and reopen. Automatic checkpoints and compaction happen at commits.
 */
import { writeSync } from "node:fs";
import process from "node:process";
import { open } from "../../mod.ts";
import type { Store } from "../../src/store.ts";
import { SeededRandom } from "../../adapters/faulty.ts";
import { blobDigest, keyId, valueBytes, valueDigest, type Effects } from "./torture-model.ts";
import { crc32 } from "../../src/wasm.ts";

/** Keys the workload writes: few enough that overwrites and deletes are common. */
const TORTURE_KEYS = 400;
/** Store options of every torture store: small segments and checkpoint bound, so rolls, checkpoints and compaction happen within seconds. */
const TORTURE_OPTIONS = { maxSegmentSize: 64 * 1024, checkpointBytes: 256 * 1024 } as const;
/** Largest plain value the workload puts. */
const VALUE_BYTES_MAX = 48 * 1024;
/** Largest blob the workload puts, and the chunk it streams them in. */
const BLOB_BYTES_MAX = 256 * 1024;
const BLOB_CHUNK = 16 * 1024;
/**
 * One blob in BLOB_LARGE_EVERY is this big instead: past the 8 MiB where a
 * hash worker joins (src/blake3parallel.ts), so kills land while one hashes,
 * and the checker's verified reads use one too.
 */
const BLOB_LARGE_BYTES = 9 * 1024 * 1024;
const BLOB_LARGE_EVERY = 25;

function line(text: string): void {
  const bytes = new TextEncoder().encode(text + "\n");
  let done = 0;
  while (done < bytes.length) done += writeSync(1, bytes, done, bytes.length - done);
}

/** A value length: mostly small, sometimes up to VALUE_BYTES_MAX. */
function valueLength(random: SeededRandom): number {
  const r = random.next();
  if (r < 0.6) return random.below(200);
  if (r < 0.95) return random.below(4096);
  return random.below(VALUE_BYTES_MAX + 1);
}

async function* chunks(bytes: Uint8Array): AsyncIterable<Uint8Array> {
  for (let i = 0; i < bytes.length; i += BLOB_CHUNK) yield bytes.subarray(i, Math.min(bytes.length, i + BLOB_CHUNK));
}

async function main(): Promise<void> {
  const [path, seedText] = process.argv.slice(2);
  const seed = Number(seedText);
  if (!path || !Number.isSafeInteger(seed)) {
    process.stderr.write("usage: torture-writer STORE SEED\n");
    process.exit(2);
  }
  const random = new SeededRandom(seed);
  let store: Store = open(path, { create: true, ...TORTURE_OPTIONS });
  line(`ready ${store.stats().lastTxid}`);
  let made = 0; // values made so far: each one's bytes differ
  for (;;) {
    const effects: Effects = new Map();
    const ops = 1 + random.below(12);
    for (let i = 0; i < ops; i++) {
      const n = random.below(TORTURE_KEYS);
      const r = random.next();
      if (r < 0.65) {
        const bytes = valueBytes(seed, made++, valueLength(random));
        store.put(keyId(n), bytes);
        effects.set(n, valueDigest(bytes));
      } else if (r < 0.9) {
        if (store.delete(keyId(n))) effects.set(n, null);
      } else {
        const large = random.below(BLOB_LARGE_EVERY) === 0;
        const bytes = valueBytes(seed, made++, large ? BLOB_LARGE_BYTES + random.below(BLOB_BYTES_MAX) : 1 + random.below(BLOB_BYTES_MAX));
        await store.putBlob(keyId(n), chunks(bytes));
        effects.set(n, blobDigest(bytes.length, crc32(bytes)));
      }
    }
    const r = random.next();
    if (r < 0.06) {
      store.rollback();
    } else if (!store.inTransaction) {
      store.commit(); // nothing to commit (deletes of absent keys): writes nothing, acknowledges nothing new
    } else {
      line(`begin ${store.nextTxid} ${JSON.stringify([...effects])}`);
      const txid = store.commit();
      line(`ok ${txid}`);
    }
    if (r >= 0.06 && r < 0.09) {
      line(`compact ${store.stats().lastTxid}`);
      store.compact();
      line(`compacted ${store.stats().lastTxid}`);
    } else if (r >= 0.09 && r < 0.11) {
      line("reopen");
      store.close();
      store = open(path, TORTURE_OPTIONS);
      line(`ready ${store.stats().lastTxid}`);
    }
  }
}

main().catch((e) => {
  process.stderr.write(`torture-writer: ${(e as Error).stack}\n`);
  process.exit(1);
});
