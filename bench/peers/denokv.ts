/**
 * Deno KV (`Deno.openKv(path)`, SQLite underneath) as a bench peer, Deno only.
 *
 * Durability: each `atomic().commit()` is an SQLite transaction that fsyncs
 * before it resolves (strace: two fsyncs per commit). Deno KV caps one
 * atomic operation at MAX_MUTATIONS mutations and MAX_MUTATION_BYTES bytes of
 * keys and values, so a batch larger than that (W2's 1,000 puts of 4 KiB)
 * is committed as several atomic operations, each durable: the largest
 * batches Deno KV allows. `Deno.openKv` needs `--unstable-kv` in Deno 2.
 * Keys are `[key bytes]`; values are stored as raw bytes (Uint8Array).
 */
import type { PeerModule, PeerStore } from "../harness.ts";
import { mkdirSync } from "node:fs";

/** Deno KV's limit on mutations in one atomic operation ("Too many mutations (max 1000)"). */
const MAX_MUTATIONS = 1000;
/** Deno KV's limit on the total size of one atomic operation's mutations ("max 819200 bytes"). */
const MAX_MUTATION_BYTES = 819_200;
/**
 * Upper bound of the encoded size of a one-part key of 32 bytes: a type
 * byte, each byte doubled in the worst case (0x00 is escaped), a terminator.
 */
const ENCODED_KEY_BYTES_MAX = 2 + 2 * 32;
/** The database file inside the case directory. */
const DATA_FILE = "kv.sqlite";

// The slice of the Deno KV API used here (it is an unstable API, so typed locally).
interface KvEntry { value: unknown }
interface KvAtomic {
  set(key: unknown[], value: unknown): KvAtomic;
  commit(): Promise<{ ok: boolean }>;
}
interface Kv {
  atomic(): KvAtomic;
  get(key: unknown[]): Promise<KvEntry>;
  close(): void;
}

class DenoKvPeer implements PeerStore {
  readonly note = `Deno KV atomic().commit() per transaction (SQLite, fsync per commit); at most ${MAX_MUTATIONS} mutations and ${MAX_MUTATION_BYTES} B per atomic, so larger batches are split`;
  constructor(private readonly kv: Kv) {}

  async writeBatch(keys: readonly Uint8Array[], values: readonly Uint8Array[], start: number, end: number): Promise<void> {
    let i = start;
    while (i < end) {
      const atomic = this.kv.atomic();
      let count = 0;
      let bytes = 0;
      while (i < end && count < MAX_MUTATIONS && bytes + ENCODED_KEY_BYTES_MAX + values[i]!.length <= MAX_MUTATION_BYTES) {
        atomic.set([keys[i]!], values[i]!);
        bytes += ENCODED_KEY_BYTES_MAX + values[i]!.length;
        count++;
        i++;
      }
      if (count === 0) throw new RangeError(`denokv: a value of ${values[i]!.length} B exceeds one atomic operation's ${MAX_MUTATION_BYTES} B`);
      const result = await atomic.commit();
      if (!result.ok) throw new Error(`denokv: atomic commit of keys ${i - count}..${i} was refused`);
    }
  }

  async getAsync(key: Uint8Array): Promise<Uint8Array | undefined> {
    const entry = await this.kv.get([key]);
    return entry.value === null ? undefined : (entry.value as Uint8Array);
  }

  close(): void {
    this.kv.close();
  }
}

/** The Deno KV peer: Deno only. */
export const peer: PeerModule = {
  runtimes: ["deno"],
  async openPeer(dir: string, options: { create: boolean }): Promise<PeerStore> {
    const deno = (globalThis as { Deno?: { openKv?: (path: string) => Promise<Kv> } }).Deno;
    if (deno === undefined) throw new Error("denokv: Deno KV runs only under Deno");
    if (deno.openKv === undefined) throw new Error("denokv: Deno.openKv is missing; run deno with --unstable-kv");
    if (options.create) mkdirSync(dir, { recursive: true });
    return new DenoKvPeer(await deno.openKv(`${dir}/${DATA_FILE}`));
  },
};
