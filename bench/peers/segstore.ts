/**
 * segstore itself, through the same contract as the peers.
 *
 * Durability: `commit()` appends one COMMIT record and fdatasyncs the
 * segment before it returns (DESIGN.md), so a transaction is durable when
 * `commit()` returns. `indexStats` reads `stats().indexBytes` (and the key
 * count) for W5's bytes per key.
 */
import type { PeerModule, PeerStore } from "../harness.ts";

/**
 * The store as its users load it: under Node the package's own entry (the
 * bundle in dist/pkg that package.json "exports" names), under Deno mod.ts.
 * The specifier is a variable so tsc does not resolve the package while it
 * is building it.
 */
const NODE_ENTRY = "segstore";
async function loadOpen(): Promise<(dir: string, options: { create: boolean }) => unknown> {
  if ("Deno" in globalThis) return (await import("../../mod.ts")).open;
  return ((await import(NODE_ENTRY)) as { open: (dir: string, options: { create: boolean }) => unknown }).open;
}

/** The slice of segstore's Store used here. */
interface StoreLike {
  put(id: Uint8Array, bytes: Uint8Array): void;
  get(id: Uint8Array): Uint8Array | undefined;
  commit(): unknown;
  close(): void;
  stats(): unknown;
}

class SegstorePeer implements PeerStore {
  readonly note = "segstore commit() (one COMMIT record and fdatasync per transaction)";
  constructor(private readonly store: StoreLike) {}

  writeBatch(keys: readonly Uint8Array[], values: readonly Uint8Array[], start: number, end: number): void {
    const store = this.store;
    for (let i = start; i < end; i++) store.put(keys[i]!, values[i]!);
    store.commit();
  }

  get(key: Uint8Array): Uint8Array | undefined {
    return this.store.get(key);
  }

  indexStats(): { indexBytes: number; keys?: number } | undefined {
    const stats = this.store.stats() as Record<string, unknown> | undefined;
    if (stats === undefined || typeof stats.indexBytes !== "number") return undefined;
    const keys = [stats.keys, stats.count, stats.entries, stats.objects].find((v) => typeof v === "number") as number | undefined;
    return keys === undefined ? { indexBytes: stats.indexBytes } : { indexBytes: stats.indexBytes, keys };
  }

  close(): void {
    this.store.close();
  }
}

/** segstore: Node and Deno. */
export const peer: PeerModule = {
  runtimes: ["node", "deno"],
  async openPeer(dir: string, options: { create: boolean }): Promise<PeerStore> {
    // `await` in case open() ever returns a promise; today it is synchronous.
    const open = await loadOpen();
    const store = (await open(dir, { create: options.create })) as unknown as StoreLike;
    return new SegstorePeer(store);
  },
};
