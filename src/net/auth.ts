/**
 * Challenge-response authentication for TCP connections: each side proves
 * it knows the shared token without sending it, with HMAC-SHA256 (WebCrypto
 * `crypto.subtle`, present in Node and Deno alike).
 *
 * ```
 * server → client   hello push: server nonce Ns (32 random bytes)
 * client → server   hello call: client nonce Nc, proof HMAC(token, "segstore-client-v1" ‖ Ns ‖ Nc)
 * server → client   hello reply: proof HMAC(token, "segstore-server-v1" ‖ Nc ‖ Ns)
 * ```
 *
 * The client's proof binds the server's fresh nonce, so a recorded hello
 * cannot be replayed; the server's proof binds the client's nonce, so a
 * client knows it reached a server holding the token (not an impostor
 * replaying an old reply). The two labels differ, so one side's proof can
 * never be reflected back as the other's.
 */
import { AUTH_NONCE_SIZE, AUTH_PROOF_SIZE } from "./protocol.ts";

const CLIENT_LABEL = new TextEncoder().encode("segstore-client-v1");
const SERVER_LABEL = new TextEncoder().encode("segstore-server-v1");

/** Shortest token accepted: a secret shorter than this is guessable. */
export const TOKEN_LENGTH_MIN = 8;

/** The token's bytes (UTF-8 of a string), checked for length. */
export function tokenBytes(token: string | Uint8Array, what: string): Uint8Array {
  const bytes = typeof token === "string" ? new TextEncoder().encode(token) : token;
  if (!(bytes instanceof Uint8Array)) throw new TypeError(`${what}: token must be a string or Uint8Array`);
  if (bytes.length < TOKEN_LENGTH_MIN) throw new RangeError(`${what}: a token of ${bytes.length} bytes is too short: use at least ${TOKEN_LENGTH_MIN} (random) bytes`);
  return bytes;
}

/** AUTH_NONCE_SIZE fresh random bytes. */
export function randomNonce(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(AUTH_NONCE_SIZE));
}

/** The HMAC-SHA256 proof `side` sends: over its label, then the peer's nonce, then its own. */
export async function authProof(token: Uint8Array, side: "client" | "server", peerNonce: Uint8Array, ownNonce: Uint8Array): Promise<Uint8Array> {
  const key = await crypto.subtle.importKey("raw", token as BufferSource, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const label = side === "client" ? CLIENT_LABEL : SERVER_LABEL;
  const message = new Uint8Array(label.length + peerNonce.length + ownNonce.length);
  message.set(label, 0);
  message.set(peerNonce, label.length);
  message.set(ownNonce, label.length + peerNonce.length);
  const proof = new Uint8Array(await crypto.subtle.sign("HMAC", key, message as BufferSource));
  if (proof.length !== AUTH_PROOF_SIZE) throw new Error(`segstore internal assertion: HMAC-SHA256 of ${proof.length} bytes`);
  return proof;
}

/** Compares two proofs in time independent of where they differ. */
export function proofsEqual(a: unknown, b: Uint8Array): boolean {
  if (!(a instanceof Uint8Array) || a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < b.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}
