/**
 * Path resolution without a runtime: `resolvePath(cwd, path)` gives the
 * absolute, normalized form of `path` ("." and ".." folded, separators
 * collapsed), as Node's `path.resolve` does on POSIX. The Deno adapter uses
 * it (the Deno namespace has no path module) and so does the faulty adapter,
 * whose paths live only in memory.
 */

/**
 * Resolves `path` against the absolute directory `cwd`.
 *
 * @example
 * resolvePath("/srv", "data/../store/") // "/srv/store"
 * resolvePath("/srv", "/tmp//x/.")       // "/tmp/x"
 */
export function resolvePath(cwd: string, path: string): string {
  const full = path.startsWith("/") ? path : `${cwd}/${path}`;
  const parts: string[] = [];
  for (const part of full.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") parts.pop(); // ".." at the root stays at the root, as POSIX says
    else parts.push(part);
  }
  return "/" + parts.join("/");
}
