/**
 * `segstore serve`: owns a store and serves it to clients over TCP or a
 * unix socket (src/net/server.ts) until SIGINT or SIGTERM, then closes the
 * server and the store (which writes a checkpoint) and exits 0.
 */
import { type CommandSpec, EXIT_OK, printJson, stringOption, usageLine, UsageError } from "./command.ts";
import { CliFileError, readFileLimited } from "./io.ts";
import { openForCli } from "./store-open.ts";

/** Largest token file read: a token is a short secret, so anything bigger is the wrong file. */
export const TOKEN_FILE_SIZE_MAX = 4096;

export const serveCommand: CommandSpec = {
  name: "serve",
  usage: "PATH --listen URL [--token-file F]",
  summary: "Serves the store to clients (connect(url, { token })) until interrupted (Ctrl-C or SIGTERM).",
  details:
    "URL is tcp://HOST:PORT (PORT 0 picks a free port) or unix:/absolute/path. TCP needs a token: the\n" +
    "first line of the token file. The URL served is printed on stdout once the server listens.",
  options: {
    listen: { type: "string", short: "l", value: "URL", description: "where to listen: tcp://HOST:PORT or unix:/path" },
    "token-file": { type: "string", value: "F", description: "file whose first line is the token clients must prove they know" },
    json: { type: "boolean", description: 'print {"url"} as JSON once listening' },
  },
  positionals: [1, 1],
  examples: [
    "segstore serve ./store --listen unix:/tmp/segstore.sock",
    "segstore serve ./store --listen tcp://127.0.0.1:7070 --token-file ~/.segstore-token",
  ],
  async run(args, io) {
    const [path] = args.positionals as [string];
    const listen = stringOption(args, "listen");
    if (listen === undefined) throw new UsageError("serve: --listen URL is required", usageLine(this));
    const tokenFile = stringOption(args, "token-file");
    let token: string | undefined;
    if (tokenFile !== undefined) {
      token = new TextDecoder().decode(readFileLimited(io.fs, tokenFile, TOKEN_FILE_SIZE_MAX, "a token file")).split(/\r?\n/)[0]!.trim();
      if (token === "") throw new CliFileError(`token file ${tokenFile} is empty: its first line is the token`);
    }
    if (token === undefined && listen.startsWith("tcp:")) {
      throw new UsageError(`serve: ${listen} is a TCP address, which needs --token-file F (clients prove they know the token; a unix: socket needs none)`, usageLine(this));
    }
    // Loaded here, not at the top: only serve needs the network code.
    const { serve } = await import("../net/server.ts");
    const store = openForCli(io, path);
    let server: { url: string; close(): Promise<void> };
    try {
      server = await serve(store, token === undefined ? { listen } : { listen, token });
    } catch (e) {
      store.close();
      throw e;
    }
    if (args.values.json) await printJson(io, { url: server.url });
    else await io.write(`${server.url}\n`);
    const signal = await io.untilSignal();
    try {
      await server.close();
    } finally {
      store.close();
    }
    if (io.stderrIsTTY) io.error(`segstore serve: ${signal}: closed ${path}\n`);
    return EXIT_OK;
  },
};
