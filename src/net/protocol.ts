/**
 * The wire protocol between a segstore server and its clients: frames,
 * messages, limits, and errors carried by class name. docs/protocol.md is
 * the prose version, precise enough to write a client from; this file is
 * the one place the code states those facts.
 *
 * Map: limits · frames (`FrameReader`, `frameHeader`) · the msgpack codec
 * (`createCodec`) · messages (`parseMessage`) · hand-built chunk frames
 * (`chunkFrameHeader`) · errors (`errorToWire`, `errorFromWire`) · argument
 * checks (`argId`, `argBytes`, ...) · names (`keyString`, upload names).
 *
 * ## Frames
 *
 * ```
 * u32le length | msgpack payload of `length` bytes      (1 <= length <= FRAME_SIZE_MAX)
 * ```
 *
 * ## Messages (each payload is one msgpack array)
 *
 * ```
 * client → server  [msgid >= 1, method, args[]]     a call: exactly one reply comes back
 *                  [0, method, args[]]              a notification: no reply (uploadChunk)
 * server → client  [msgid >= 1, error | nil, result] the reply to call msgid
 *                  [0, name, args[]]                a push (hello, invalidate, blobStart, ...)
 * error = [className, message, props{}]             the client rethrows the same class
 * ```
 */
import { Decoder, Encoder } from "@msgpack/msgpack";
import { FsError } from "../fs.ts";
import {
  assert, ConflictError, IntegrityError, KEY_SIZE, LockedError, MAX_OBJECT_SIZE, NotFoundError, SegstoreError, StateError,
  StorageError, StoreFormatError,
} from "../format.ts";

// ---------------------------------------------------------------------------
// Limits

/** Version of this protocol, exchanged in the hello; a peer of another version is refused. */
export const PROTOCOL_VERSION = 1;
/** Bytes of the length prefix of every frame. */
export const FRAME_HEADER_SIZE = 4;
/**
 * Room in a frame for everything around the largest value: msgid, method,
 * key, serial and msgpack headers take well under 1 KiB; 64 KiB is plenty.
 */
export const FRAME_ENVELOPE_MAX = 64 * 1024;
/**
 * Largest frame payload either side accepts. A put of MAX_OBJECT_SIZE must
 * fit one frame; anything bigger is a blob, streamed in chunks. A length
 * above this is refused before a byte of the payload is buffered.
 */
export const FRAME_SIZE_MAX = MAX_OBJECT_SIZE + FRAME_ENVELOPE_MAX;
/**
 * Calls one connection may have unanswered. The client queues further calls
 * locally; the server stops reading a connection that goes past it until
 * replies have gone out, so one client cannot pile up work in the server.
 */
export const IN_FLIGHT_MAX = 1024;
/**
 * Blob bytes per chunk frame, both ways. 1 MiB keeps per-frame costs small
 * against the copy and hash of the data, while a connection's buffers stay
 * a few MiB whatever the blob's size.
 */
export const BLOB_CHUNK_SIZE = 1024 * 1024;
/** Most bytes of values one `write` call carries; a bigger transaction is sent as several. */
export const WRITE_BATCH_BYTES = 4 * 1024 * 1024;
/** Ids per `listChunk` push: 16384 × 34 bytes is about 0.5 MiB per frame. */
export const LIST_CHUNK_IDS = 16384;
/**
 * Most bytes of values one connection's transaction may stage on the server
 * before commit (the server holds them in memory until then). Larger data
 * belongs in blobs, which are staged on disk.
 */
export const TRANSACTION_BYTES_MAX = 256 * 1024 * 1024;
/** Writes (puts, deletes, blobs) one transaction may stage: bounds the server's per-connection maps. */
export const TRANSACTION_WRITES_MAX = 4 * 1024 * 1024;
/** A connection that has not completed the hello within this many milliseconds is closed. */
export const HELLO_TIMEOUT_MS = 10_000;
/** Random bytes in each side's authentication nonce. */
export const AUTH_NONCE_SIZE = 32;
/** Length of an HMAC-SHA256 proof. */
export const AUTH_PROOF_SIZE = 32;
/** Longest method or push name; names are short ASCII words. */
export const METHOD_NAME_MAX = 32;

// Relations between the limits, checked once at load.
if (BLOB_CHUNK_SIZE + FRAME_ENVELOPE_MAX > FRAME_SIZE_MAX) throw new Error("protocol: a blob chunk must fit one frame");
if (WRITE_BATCH_BYTES + FRAME_ENVELOPE_MAX > FRAME_SIZE_MAX) throw new Error("protocol: a write batch must fit one frame");
if (LIST_CHUNK_IDS * (KEY_SIZE + 2) + FRAME_ENVELOPE_MAX > FRAME_SIZE_MAX) throw new Error("protocol: a list chunk must fit one frame");
if (FRAME_SIZE_MAX >= 2 ** 32) throw new Error("protocol: frame lengths are u32");

// ---------------------------------------------------------------------------
// Frames

/**
 * Splits a byte stream into frame payloads. Small frames are handed out as
 * views into the chunk they arrived in (no copy); a frame spread over
 * several chunks is assembled into its own buffer, allocated only after its
 * length passed the FRAME_SIZE_MAX check.
 *
 * @example
 * const reader = new FrameReader();
 * for (const payload of reader.push(chunk)) handle(decoder.decode(payload));
 */
export class FrameReader {
  /** Up to 3 bytes of a length prefix that straddles chunks. */
  #head = new Uint8Array(FRAME_HEADER_SIZE);
  #headFilled = 0;
  /** The frame being assembled across chunks, and how much of it has arrived. */
  #frame: Uint8Array | undefined;
  #frameFilled = 0;
  /** Buffers this reader allocated for assembled frames, and those given back for reuse (see recycle). */
  #owned = new WeakSet<ArrayBufferLike>();
  #spares: ArrayBufferLike[] = [];

  constructor(readonly frameSizeMax: number = FRAME_SIZE_MAX) {}

  /** True when no partial frame is buffered (a clean place for the stream to end). */
  get idle(): boolean {
    return this.#headFilled === 0 && this.#frame === undefined;
  }

  /** The complete payloads in `chunk` (with what came before); throws a protocol error on a bad length. */
  push(chunk: Uint8Array): Uint8Array[] {
    const out: Uint8Array[] = [];
    let pos = 0;
    const end = chunk.length;
    while (pos < end) {
      if (this.#frame !== undefined) {
        const take = Math.min(end - pos, this.#frame.length - this.#frameFilled);
        this.#frame.set(chunk.subarray(pos, pos + take), this.#frameFilled);
        this.#frameFilled += take;
        pos += take;
        if (this.#frameFilled === this.#frame.length) {
          out.push(this.#frame);
          this.#frame = undefined;
          this.#frameFilled = 0;
        }
        continue;
      }
      let length: number;
      if (this.#headFilled > 0 || end - pos < FRAME_HEADER_SIZE) {
        const take = Math.min(end - pos, FRAME_HEADER_SIZE - this.#headFilled);
        this.#head.set(chunk.subarray(pos, pos + take), this.#headFilled);
        this.#headFilled += take;
        pos += take;
        if (this.#headFilled < FRAME_HEADER_SIZE) break;
        this.#headFilled = 0;
        length = readU32le(this.#head, 0);
      } else {
        length = readU32le(chunk, pos);
        pos += FRAME_HEADER_SIZE;
      }
      this.#checkLength(length);
      if (end - pos >= length) {
        out.push(chunk.subarray(pos, pos + length));
        pos += length;
      } else {
        const fit = this.#spares.findIndex((b) => b.byteLength >= length);
        const spare = fit < 0 ? undefined : this.#spares.splice(fit, 1)[0]!;
        this.#frame = spare !== undefined ? new Uint8Array(spare, 0, length) : new Uint8Array(length);
        this.#owned.add(this.#frame.buffer);
        this.#frameFilled = 0;
      }
    }
    return out;
  }

  /**
   * Gives back a payload this reader returned, once nothing refers to it
   * any more: a later frame assembled across chunks reuses its buffer
   * (blob chunks: a few 1 MiB buffers per connection instead of one per
   * chunk). Payloads that are views into a socket chunk are ignored.
   */
  recycle(payload: Uint8Array): void {
    const buffer = payload.buffer;
    if (!this.#owned.has(buffer) || buffer.byteLength > RECYCLE_BYTES_MAX || this.#spares.includes(buffer)) return;
    if (this.#spares.length < RECYCLE_SPARES_MAX) {
      this.#spares.push(buffer);
      return;
    }
    // Full: keep the bigger buffers, which fit any frame the smaller ones do.
    let smallest = 0;
    for (let i = 1; i < this.#spares.length; i++) if (this.#spares[i]!.byteLength < this.#spares[smallest]!.byteLength) smallest = i;
    if (this.#spares[smallest]!.byteLength < buffer.byteLength) this.#spares[smallest] = buffer;
  }

  #checkLength(length: number): void {
    if (length === 0) throw protocolError("frame of length 0: every frame holds one msgpack message");
    if (length > this.frameSizeMax) {
      throw protocolError(`frame of ${length} bytes is over the limit of ${this.frameSizeMax} (FRAME_SIZE_MAX): values over ${MAX_OBJECT_SIZE} bytes are blobs`);
    }
  }
}

function readU32le(b: Uint8Array, at: number): number {
  return (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;
}

/** Largest assembled-frame buffer a FrameReader keeps for reuse (a blob chunk frame, with room). */
const RECYCLE_BYTES_MAX = 2 * 1024 * 1024;
/**
 * Assembled-frame buffers a FrameReader keeps for reuse. A blob transfer
 * has one frame being written while the next is read, and sometimes a
 * third arrives first: with one spare, the buffer given back second was
 * dropped, and a 1 GiB download left tens of MiB of dropped frames for the
 * collector (a Deno client's peak RSS swung from 112 to 157 MiB).
 */
const RECYCLE_SPARES_MAX = 3;

/** Writes `length` as the u32le frame prefix into `out` at `at`. */
export function writeFrameHeader(out: Uint8Array, at: number, length: number): void {
  out[at] = length & 0xff;
  out[at + 1] = (length >>> 8) & 0xff;
  out[at + 2] = (length >>> 16) & 0xff;
  out[at + 3] = (length >>> 24) & 0xff;
}

// ---------------------------------------------------------------------------
// The msgpack codec

/**
 * Smallest payload size class, log2: frames of up to 64 bytes share one
 * decoder. Classes go up by powers of two to the frame limit (about 20).
 */
const DECODER_CLASS_MIN_LOG2 = 6;

/** One encoder, and decoders by payload size class, reused for every message of a connection (msgpack-js's advice). */
export interface Codec {
  encoder: Encoder;
  /** Decoders by log2 of their payload size class, made on first use. */
  decoders: Decoder[];
  frameSizeMax: number;
}

/**
 * The codec of one connection. 64-bit integers (transaction ids, serials)
 * travel as msgpack uint64 and decode as bigint. msgpack-js allocates an
 * array or map for its claimed length before reading an element (and
 * defaults to 4 Gi elements), so 5 bytes claiming 16 M elements would cost
 * 128 MiB. An array of N elements takes at least N bytes and a map 2N, so
 * each payload is decoded with limits no larger than the next power of two
 * of its own length: a hostile claim is refused before anything is
 * allocated for it.
 */
export function createCodec(frameSizeMax: number = FRAME_SIZE_MAX): Codec {
  return { encoder: new Encoder({ useBigInt64: true, ignoreUndefined: false }), decoders: [], frameSizeMax };
}

/** The decoder for payloads of up to 2 ** log2 bytes. */
function decoderOfClass(codec: Codec, log2: number): Decoder {
  let decoder = codec.decoders[log2];
  if (decoder === undefined) {
    const limit = Math.min(2 ** log2, codec.frameSizeMax);
    decoder = new Decoder({
      useBigInt64: true,
      maxStrLength: limit,
      maxBinLength: limit,
      maxArrayLength: limit,
      maxMapLength: Math.floor(limit / 2),
      // The protocol uses no extension types; a timestamp ext would only be a client's mistake.
      maxExtLength: 16,
    });
    codec.decoders[log2] = decoder;
  }
  return decoder;
}

/** Decodes one frame's payload, turning any decoder failure into a protocol error. */
export function decodePayload(codec: Codec, payload: Uint8Array): unknown {
  assert(payload.length <= codec.frameSizeMax, `payload of ${payload.length} bytes passed the frame limit`);
  const log2 = Math.max(DECODER_CLASS_MIN_LOG2, Math.ceil(Math.log2(payload.length || 1)));
  try {
    return decoderOfClass(codec, log2).decode(payload);
  } catch (e) {
    throw protocolError(`malformed msgpack in a frame of ${payload.length} bytes: ${(e as Error).message ?? e}`);
  }
}

// ---------------------------------------------------------------------------
// Messages

/** A call or notification from a client, or a reply or push from the server, after shape checks. */
export interface Message {
  /** >= 1 for calls and replies; 0 for notifications and pushes. */
  msgid: number;
  /** Method (calls, notifications) or push name; undefined for replies. */
  name?: string;
  /** Call, notification or push arguments. */
  args?: unknown[];
  /** Reply error (as sent) or null. */
  error?: unknown;
  /** Reply result. */
  result?: unknown;
}

/** Largest msgid: ids are u32 so chunk frames can carry them in a fixed-size field. */
export const MSGID_MAX = 0xffff_ffff;

/**
 * Checks the shape of a decoded client message: `[msgid, method, args]`.
 * Throws a protocol error naming what is wrong; `msgidOf` recovers the id
 * for the error reply when one can be read.
 */
export function parseCall(value: unknown): { msgid: number; method: string; args: unknown[] } {
  if (!Array.isArray(value) || value.length !== 3) throw protocolError("a message must be the array [msgid, method, args]");
  const [msgid, method, args] = value as [unknown, unknown, unknown];
  if (typeof msgid !== "number" || !Number.isInteger(msgid) || msgid < 0 || msgid > MSGID_MAX) {
    throw protocolError(`msgid must be an integer 0..${MSGID_MAX}, got ${describe(msgid)}`);
  }
  if (typeof method !== "string" || method.length === 0 || method.length > METHOD_NAME_MAX) {
    throw protocolError(`method must be a name of 1..${METHOD_NAME_MAX} characters, got ${describe(method)}`);
  }
  if (!Array.isArray(args)) throw protocolError(`args of ${method} must be an array, got ${describe(args)}`);
  return { msgid, method, args };
}

/** The msgid of a malformed message when it has a usable one, else 0. */
export function msgidOf(value: unknown): number {
  if (!Array.isArray(value)) return 0;
  const m = value[0];
  return typeof m === "number" && Number.isInteger(m) && m > 0 && m <= MSGID_MAX ? m : 0;
}

/** Checks the shape of a decoded server message: a reply `[msgid, error, result]` or a push `[0, name, args]`. */
export function parseServerMessage(value: unknown): Message {
  if (!Array.isArray(value) || value.length !== 3) throw protocolError("a server message must be a 3-element array");
  const msgid = value[0];
  if (typeof msgid !== "number" || !Number.isInteger(msgid) || msgid < 0 || msgid > MSGID_MAX) {
    throw protocolError(`server message with msgid ${describe(msgid)}`);
  }
  if (msgid === 0) {
    const [, name, args] = value as [number, unknown, unknown];
    if (typeof name !== "string" || !Array.isArray(args)) throw protocolError("a push must be [0, name, args]");
    return { msgid, name, args };
  }
  return { msgid, error: value[1], result: value[2] };
}

/** A short description of a value for error messages (never its whole content). */
export function describe(v: unknown): string {
  if (v === null) return "nil";
  if (v instanceof Uint8Array) return `${v.length} bytes`;
  if (Array.isArray(v)) return `an array of ${v.length}`;
  if (typeof v === "string") return JSON.stringify(v.length > 40 ? v.slice(0, 40) + "…" : v);
  if (typeof v === "object") return "a map";
  return `${typeof v} ${String(v)}`;
}

// ---------------------------------------------------------------------------
// Hand-built chunk frames (blob data), so 1 MiB of data is read straight
// into the buffer it is sent from, behind a fixed-size header:
//
//   u32le length | 0x93 | 0x00 | str name | 0x92 | 0xce u32be id | 0xc6 u32be n | n bytes
//   (fixarray 3, msgid 0, the name, fixarray 2 [uint32 id, bin32 data])

const textEncoder = new TextEncoder();

/** Bytes before the data in a chunk frame named `name` (the frame prefix included). */
export function chunkHeaderSize(name: string): number {
  return FRAME_HEADER_SIZE + 2 + 1 + name.length + 1 + 5 + 5;
}

/**
 * Writes the header of a chunk frame (`[0, name, [id, bin]]` with `dataLength`
 * bytes of data following) into the start of `out`; returns the data offset.
 *
 * @example
 * const at = writeChunkHeader(buf, "blobChunk", msgid, n); // then buf.subarray(at, at + n) holds the data
 */
export function writeChunkHeader(out: Uint8Array, name: string, id: number, dataLength: number): number {
  if (name.length > 31 || !/^[A-Za-z]+$/.test(name)) throw new Error(`segstore internal assertion: chunk name ${name}`);
  const headerSize = chunkHeaderSize(name);
  writeFrameHeader(out, 0, headerSize - FRAME_HEADER_SIZE + dataLength);
  let p = FRAME_HEADER_SIZE;
  out[p++] = 0x93;
  out[p++] = 0x00;
  out[p++] = 0xa0 | name.length;
  p += textEncoder.encodeInto(name, out.subarray(p, p + name.length)).written;
  out[p++] = 0x92;
  out[p++] = 0xce;
  writeU32be(out, p, id);
  p += 4;
  out[p++] = 0xc6;
  writeU32be(out, p, dataLength);
  p += 4;
  return p;
}

function writeU32be(out: Uint8Array, at: number, v: number): void {
  out[at] = (v >>> 24) & 0xff;
  out[at + 1] = (v >>> 16) & 0xff;
  out[at + 2] = (v >>> 8) & 0xff;
  out[at + 3] = v & 0xff;
}

// ---------------------------------------------------------------------------
// Errors

/** An error as it travels: `[className, message, props]`. */
export type WireError = [className: string, message: string, props: Record<string, unknown>];

/** A protocol violation: a bad frame, malformed msgpack, a message of the wrong shape. */
export function protocolError(message: string): SegstoreError {
  return new SegstoreError("EPROTOCOL", `segstore protocol: ${message}`);
}

/** Authentication failed or is missing. */
export function authError(message: string): SegstoreError {
  return new SegstoreError("EAUTH", message);
}

/** The facts an error class carries beyond its message, by field name. */
const ERROR_PROPS = ["code", "store", "file", "segment", "offset", "holder", "keys", "osCode", "syscall", "path"] as const;

/**
 * An error as `[className, message, props]`. segstore's classes, FsError,
 * TypeError and RangeError keep their class; anything else travels as
 * "Error" with its message (the server's internals stay on the server).
 */
export function errorToWire(e: unknown): WireError {
  if (!(e instanceof Error)) return ["Error", String(e), {}];
  const props: Record<string, unknown> = {};
  for (const p of ERROR_PROPS) {
    const v = (e as unknown as Record<string, unknown>)[p];
    if (typeof v === "string" || typeof v === "number" || (Array.isArray(v) && v.every((x) => typeof x === "string"))) props[p] = v;
  }
  const name = e instanceof SegstoreError ? e.name : e instanceof FsError ? "FsError" : e instanceof TypeError ? "TypeError" : e instanceof RangeError ? "RangeError" : "Error";
  return [name, e.message, props];
}

function str(v: unknown, fallback: string): string {
  return typeof v === "string" ? v : fallback;
}

/**
 * Rebuilds the error a server sent, as the same class, so `instanceof`
 * works on the client as it does on an open store. A class this build does
 * not know becomes a SegstoreError with the code the server gave.
 */
export function errorFromWire(value: unknown): Error {
  if (!Array.isArray(value) || typeof value[0] !== "string" || typeof value[1] !== "string") {
    return protocolError(`the server sent an error of an unknown form (${describe(value)})`);
  }
  const [name, message] = value as [string, string];
  const props = (value[2] !== null && typeof value[2] === "object" && !Array.isArray(value[2]) ? value[2] : {}) as Record<string, unknown>;
  const place = {
    ...(typeof props.store === "string" ? { store: props.store } : {}),
    ...(typeof props.file === "string" ? { file: props.file } : {}),
    ...(typeof props.segment === "number" ? { segment: props.segment } : {}),
    ...(typeof props.offset === "number" ? { offset: props.offset } : {}),
  };
  const code = str(props.code, "EREMOTE");
  switch (name) {
    case "IntegrityError": return new IntegrityError(message, place);
    case "LockedError": return new LockedError(message, str(props.holder, "another process"), place);
    case "NotFoundError": return new NotFoundError(message, place);
    case "ConflictError": {
      const keys = Array.isArray(props.keys) ? props.keys.filter((k): k is string => typeof k === "string") : [];
      return new ConflictError(message, keys, place);
    }
    case "StoreFormatError": return new StoreFormatError(message, place);
    case "StateError": {
      const c = ["ECLOSED", "EREADONLY", "EFAILED", "EBUSY"].includes(code) ? code as "ECLOSED" : "EFAILED";
      return new StateError(c, message, place);
    }
    case "StorageError": return new StorageError(str(props.osCode, "EIO"), message, place);
    case "SegstoreError": return new SegstoreError(code, message, place);
    case "FsError": return new FsError(str(props.code, "EIO"), str(props.syscall, "remote"), str(props.path, ""), message);
    case "TypeError": return new TypeError(message);
    case "RangeError": return new RangeError(message);
    default: return new SegstoreError(code, message, place);
  }
}

// ---------------------------------------------------------------------------
// Argument checks (server side: a client's bad argument is a TypeError reply)

/** A 32-byte id argument, copied (the argument is a view into a socket buffer). */
export function argId(v: unknown, what: string): Uint8Array {
  if (!(v instanceof Uint8Array) || v.length !== KEY_SIZE) throw new TypeError(`${what} must be a ${KEY_SIZE}-byte id (msgpack bin), got ${describe(v)}`);
  return v.slice();
}

/** A byte-string argument up to `max` bytes, copied. */
export function argBytes(v: unknown, what: string, max: number): Uint8Array {
  if (!(v instanceof Uint8Array)) throw new TypeError(`${what} must be bytes (msgpack bin), got ${describe(v)}`);
  if (v.length > max) throw new RangeError(`${what} of ${v.length} bytes is over the limit of ${max}`);
  return v.slice();
}

/** A serial or transaction id argument (u64; numbers are accepted from clients that send small ones compactly). */
export function argSerial(v: unknown, what: string): bigint {
  if (typeof v === "bigint" && v >= 0n) return v;
  if (typeof v === "number" && Number.isSafeInteger(v) && v >= 0) return BigInt(v);
  throw new TypeError(`${what} must be an unsigned integer (a serial), got ${describe(v)}`);
}

/** A non-negative safe integer argument. */
export function argCount(v: unknown, what: string): number {
  if (typeof v === "number" && Number.isSafeInteger(v) && v >= 0) return v;
  if (typeof v === "bigint" && v >= 0n && v <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(v);
  throw new TypeError(`${what} must be a non-negative integer, got ${describe(v)}`);
}

/** An msgid argument referring to an earlier call. */
export function argMsgid(v: unknown, what: string): number {
  if (typeof v === "number" && Number.isInteger(v) && v > 0 && v <= MSGID_MAX) return v;
  throw new TypeError(`${what} must be an msgid 1..${MSGID_MAX}, got ${describe(v)}`);
}

/** A map argument (plain object), or an empty one for nil. */
export function argMap(v: unknown, what: string): Record<string, unknown> {
  if (v === null || v === undefined) return {};
  if (typeof v !== "object" || Array.isArray(v) || v instanceof Uint8Array) throw new TypeError(`${what} must be a map, got ${describe(v)}`);
  return v as Record<string, unknown>;
}

// ---------------------------------------------------------------------------
// Names

/**
 * A 32-byte id as a 32-character string (one char per byte), the key of
 * in-memory maps on both sides: cheaper than hex on the hot paths (a get
 * looks up its serial by it).
 */
export function keyString(id: Uint8Array): string {
  return String.fromCharCode.apply(null, id as unknown as number[]);
}

/** The id bytes back from `keyString`. */
export function keyBytes(key: string): Uint8Array {
  const out = new Uint8Array(key.length);
  for (let i = 0; i < key.length; i++) out[i] = key.charCodeAt(i);
  return out;
}

/**
 * The form of a file name a client may ask the server to take from the
 * shared blob directory: `upload-` and 32 lower-case hex digits, `.tmp`.
 * No separator, no `..`: the server joins it to its blob directory only
 * after this matches, so a client can never name a file elsewhere.
 */
export const UPLOAD_NAME_PATTERN = /^upload-[0-9a-f]{32}\.tmp$/;

/** A fresh upload file name of UPLOAD_NAME_PATTERN's form. */
export function uploadName(): string {
  const b = crypto.getRandomValues(new Uint8Array(16));
  let hex = "";
  for (const x of b) hex += (x < 16 ? "0" : "") + x.toString(16);
  return `upload-${hex}.tmp`;
}
