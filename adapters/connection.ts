/**
 * A Connection from an adapter's parts: its reads go either to a web
 * stream (`readable`, made on first use) or to a subscriber (`subscribe`),
 * whichever is asked for first, and only to that one. Shared by the Node
 * and Deno adapters; runtime-neutral.
 */
import { assert } from "../src/format.ts";
import type { Connection, ConnectionReader } from "../src/fs.ts";

/** What an adapter makes for one socket. */
export interface ConnectionParts {
  remote: string;
  writable: WritableStream<Uint8Array>;
  close(): void;
  recycle?: (chunk: Uint8Array) => void;
  /** Makes the stream of the socket's reads; called once, on the first use of `readable`. */
  makeReadable(): ReadableStream<Uint8Array>;
  /** Starts pushing the socket's reads to `reader`; called at most once, instead of makeReadable. */
  subscribe(reader: ConnectionReader): { resume(): void };
}

/**
 * The Connection over `parts`.
 *
 * @example
 * return connectionOf({ remote, writable, close, makeReadable, subscribe });
 */
export function connectionOf(parts: ConnectionParts): Connection {
  let reading: "stream" | "subscribe" | undefined;
  let readable: ReadableStream<Uint8Array> | undefined;
  return {
    get readable() {
      assert(reading !== "subscribe", `connection ${parts.remote}: readable after subscribe`);
      reading = "stream";
      return (readable ??= parts.makeReadable());
    },
    subscribe(reader) {
      assert(reading === undefined, `connection ${parts.remote}: subscribe once, and not after readable`);
      reading = "subscribe";
      return parts.subscribe(reader);
    },
    writable: parts.writable,
    remote: parts.remote,
    close: parts.close,
    ...(parts.recycle === undefined ? {} : { recycle: parts.recycle }),
  };
}
