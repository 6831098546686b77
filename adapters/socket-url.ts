/**
 * The socket addresses segstore serves and connects to, parsed in one place
 * for both runtime adapters:
 *
 * - `tcp://HOST:PORT`: HOST is a name, an IPv4 address or a bracketed IPv6
 *   address (`tcp://[::1]:7070`); PORT 0 asks the OS for a free port.
 * - `unix:/abs/path`: a unix domain socket; the path must be absolute so the
 *   server and its clients agree on it whatever their working directories.
 */
import { FsError } from "../src/fs.ts";

/** Highest TCP port number. */
const TCP_PORT_MAX = 65535;

/** A parsed socket address. */
export type SocketAddress =
  | { transport: "tcp"; hostname: string; port: number }
  | { transport: "unix"; path: string };

/**
 * Parses a socket URL, or throws FsError EINVAL naming it and the forms accepted.
 *
 * @example
 * parseSocketUrl("tcp://127.0.0.1:7070") // { transport: "tcp", hostname: "127.0.0.1", port: 7070 }
 * parseSocketUrl("unix:/run/segstore.sock") // { transport: "unix", path: "/run/segstore.sock" }
 */
export function parseSocketUrl(url: string, syscall = "listen"): SocketAddress {
  const tcp = /^tcp:\/\/(\[[0-9a-fA-F:.]+\]|[^:/\[\]]+):(\d{1,5})$/.exec(url);
  if (tcp) {
    const port = Number(tcp[2]);
    if (port <= TCP_PORT_MAX) {
      const hostname = tcp[1]!.startsWith("[") ? tcp[1]!.slice(1, -1) : tcp[1]!;
      return { transport: "tcp", hostname, port };
    }
  }
  const unix = /^unix:(\/.*[^/])$/.exec(url);
  if (unix) return { transport: "unix", path: unix[1]! };
  throw new FsError("EINVAL", syscall, url,
    `cannot ${syscall} on ${JSON.stringify(url)}: expected "tcp://HOST:PORT" (PORT 0..${TCP_PORT_MAX}) or "unix:/absolute/path"`);
}

/**
 * Formats an address as a URL, the inverse of `parseSocketUrl`.
 *
 * @example
 * formatSocketUrl({ transport: "tcp", hostname: "::1", port: 7070 }) // "tcp://[::1]:7070"
 */
export function formatSocketUrl(address: SocketAddress): string {
  if (address.transport === "unix") return `unix:${address.path}`;
  const host = address.hostname.includes(":") ? `[${address.hostname}]` : address.hostname;
  return `tcp://${host}:${address.port}`;
}
