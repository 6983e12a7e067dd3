// Standard EventSource clients for the Python tests: Node's `eventsource` package (the one
// pinned in package.json), used as an application would use it, nothing added.
//
//   node tests/node/sse_clients.mjs URL [URL ...]
//
// Opens one EventSource per URL and prints one JSON line per thing it sees on stdout:
//   {"stream": 0, "kind": "open", "readyState": 1}
//   {"stream": 0, "kind": "message", "id": "12", "data": "{...}", "readyState": 1}
//   {"stream": 0, "kind": "error", "message": "...", "code": 503, "readyState": 0}
// readyState 2 (CLOSED) on an error means the client gave up for good. It exits when its
// stdin closes (the test ended, or died) or on SIGTERM.

import { EventSource } from "eventsource";

const sources = process.argv.slice(2).map((url, stream) => {
  const source = new EventSource(url);
  const print = (line) => process.stdout.write(`${JSON.stringify({ stream, ...line })}\n`);
  source.addEventListener("open", () => print({ kind: "open", readyState: source.readyState }));
  source.addEventListener("message", (event) =>
    print({ kind: "message", id: event.lastEventId, data: event.data, readyState: source.readyState }),
  );
  source.addEventListener("error", (error) =>
    print({ kind: "error", message: error.message, code: error.code, readyState: source.readyState }),
  );
  return source;
});

function stop() {
  for (const source of sources) source.close();
  process.exit(0);
}

process.stdin.on("end", stop);
process.stdin.on("close", stop);
process.stdin.resume();
process.on("SIGTERM", stop);
