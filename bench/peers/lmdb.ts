/**
 * lmdb-js (memory-mapped B+tree) as a bench peer.
 *
 * Durability: `overlappingSync: false` and `noSync: false`, so each
 * `transactionSync` commits with an fdatasync of the data file before it
 * returns (strace shows one fdatasync per transaction). lmdb-js's default,
 * `overlappingSync: true` on Linux, returns before the flush and would not be
 * a durable commit. Values are stored raw (`encoding: "binary"`), keys as
 * bytes (`keyEncoding: "binary"`); gets use `getBinary`, as BENCH.md says.
 */
import { open, type Database } from "lmdb";
import type { PeerModule, PeerStore } from "../harness.ts";
import { mkdirSync } from "node:fs";

/** The lmdb-js data file inside the case directory (lmdb-js also writes `data.mdb-lock` beside it). */
const DATA_FILE = "data.mdb";

class LmdbPeer implements PeerStore {
  readonly note = "lmdb-js transactionSync, overlappingSync:false, noSync:false (fdatasync per transaction)";
  constructor(private readonly db: Database<Uint8Array, Uint8Array>) {}

  writeBatch(keys: readonly Uint8Array[], values: readonly Uint8Array[], start: number, end: number): void {
    const db = this.db;
    db.transactionSync(() => {
      for (let i = start; i < end; i++) db.putSync(keys[i]!, values[i]!);
    });
  }

  get(key: Uint8Array): Uint8Array | undefined {
    return this.db.getBinary(key);
  }

  async close(): Promise<void> {
    await this.db.close();
  }
}

/** The lmdb peer: Node and Deno (lmdb-js loads its prebuilt addon in both). */
export const peer: PeerModule = {
  runtimes: ["node", "deno"],
  async openPeer(dir: string, options: { create: boolean }): Promise<PeerStore> {
    if (options.create) mkdirSync(dir, { recursive: true });
    const db = open<Uint8Array, Uint8Array>({
      path: `${dir}/${DATA_FILE}`,
      noSync: false,
      overlappingSync: false,
      encoding: "binary",
      keyEncoding: "binary",
    });
    return new LmdbPeer(db);
  },
};
