// Host side of a user transformation context: installed once per V8 context, before the user's code.
// The whole batch crosses the boundary as one JSON string each way; the per-event loop runs here.
(function () {
  "use strict";
  const g = globalThis;
  const parse = JSON.parse;
  const stringify = JSON.stringify;
  const isArray = Array.isArray;
  const PENDING = "__sluice_pending__";
  const IDLE = "__sluice_idle__";
  const USER_SCRIPT = "user_transformation";
  const MAX_LOG_LINES = 10000;
  const MAX_LOG_CHARS = 1 << 20;

  // Only ECMAScript built-ins plus log and metadata: take away what the embedder added (timers) and
  // what can schedule work outside our call (Atomics.waitAsync, WebAssembly's async compiler).
  g.setTimeout = undefined;
  g.clearTimeout = undefined;
  g.__timer_manager = undefined;
  if (typeof Atomics === "object") delete Atomics.waitAsync;
  delete g.WebAssembly;

  // Binary buffers live outside the V8 heap, so the heap limit does not see them: count the bytes
  // that buffer and typed-array constructors allocate during one call against the same limit.
  let bufferBudget = 0;
  const charge = (bytes) => {
    if (bytes > 0) {
      bufferBudget -= bytes;
      if (bufferBudget < 0) throw new RangeError("Array buffer allocation exceeds the memory limit");
    }
  };
  const guard = (name, sizeOf) => {
    const Target = g[name];
    if (typeof Target !== "function") return;
    g[name] = new Proxy(Target, {
      construct(target, args, newTarget) {
        charge(sizeOf(target, args));
        return Reflect.construct(target, args, newTarget === g[name] ? target : newTarget);
      },
    });
  };
  const bufferBytes = (target, args) => Number(args[0]) || 0;
  const typedBytes = (target, args) => {
    const a = args[0];
    const per = target.BYTES_PER_ELEMENT;
    if (typeof a === "number") return a * per;
    if (a === null || typeof a !== "object") return 0;
    if (a instanceof ArrayBuffer || (typeof SharedArrayBuffer === "function" && a instanceof SharedArrayBuffer)) {
      return 0;
    }
    const n = Number(a.length);
    return (Number.isFinite(n) ? n : 0) * per;
  };
  guard("ArrayBuffer", bufferBytes);
  guard("SharedArrayBuffer", bufferBytes);
  for (const name of [
    "Int8Array", "Uint8Array", "Uint8ClampedArray", "Int16Array", "Uint16Array", "Int32Array",
    "Uint32Array", "Float16Array", "Float32Array", "Float64Array", "BigInt64Array", "BigUint64Array",
  ]) {
    guard(name, typedBytes);
  }

  let logs = [];
  let logChars = 0;
  let metadataById = new Map();
  let mode = null; // "event" | "batch"
  let entry = null;
  let pending = null;

  const show = (value) => {
    if (typeof value === "string") return value;
    if (value instanceof Error) return String(value);
    if (value !== null && typeof value === "object") {
      try {
        return stringify(value);
      } catch (e) {
        return String(value);
      }
    }
    return String(value);
  };

  const log = function log(...args) {
    if (logs.length >= MAX_LOG_LINES || logChars >= MAX_LOG_CHARS) return;
    const line = args.map(show).join(" ");
    logChars += line.length;
    logs.push(line);
  };

  const metadata = function metadata(event) {
    const id = event !== null && typeof event === "object" ? event.messageId : undefined;
    const found = metadataById.get(id);
    return found === undefined ? {} : found;
  };

  Object.defineProperty(g, "log", { value: log, writable: false, configurable: false, enumerable: false });
  Object.defineProperty(g, "metadata", { value: metadata, writable: false, configurable: false, enumerable: false });

  // "Error: message" plus only the frames that point into the user's code.
  const describe = (err) => {
    if (err instanceof Error || (err !== null && typeof err === "object" && typeof err.stack === "string")) {
      const stack = typeof err.stack === "string" ? err.stack : String(err);
      const lines = stack.split("\n");
      const head = [];
      const frames = [];
      for (const line of lines) {
        if (/^\s+at /.test(line)) {
          if (line.indexOf(USER_SCRIPT + ":") !== -1) {
            frames.push(line.split(USER_SCRIPT + ":").join("base transformation:"));
          }
        } else if (frames.length === 0) {
          head.push(line);
        }
      }
      return head.concat(frames).join("\n");
    }
    if (err !== null && typeof err === "object") {
      try {
        return stringify(err);
      } catch (e) {
        return String(err);
      }
    }
    return String(err);
  };

  const isEventObject = (value) => value !== null && typeof value === "object" && !isArray(value);
  const isThenable = (value) => value !== null && typeof value === "object" && typeof value.then === "function";

  // One input's transformEvent result as a JSON fragment: {"o": [...]} or {"e": "..."}.
  const eventResult = (value) => {
    try {
      if (value === null || value === undefined) return '{"o":[]}';
      if (isArray(value)) {
        for (const item of value) {
          if (!isEventObject(item)) {
            return stringify({ e: "returned event in events array from transformEvent(event) is not an object" });
          }
        }
        return '{"o":' + stringify(value) + "}";
      }
      if (!isEventObject(value)) return stringify({ e: "returned event from transformEvent(event) is not an object" });
      return '{"o":[' + stringify(value) + "]}";
    } catch (err) {
      return stringify({ e: describe(err) });
    }
  };

  const errorResult = (err) => stringify({ e: describe(err) });

  // transformBatch's outputs attributed to inputs by messageId; the rest go to the first input.
  const batchResult = (value, events, inputIndex) => {
    if (!isArray(value)) {
      return stringify({ b: "returned events from transformBatch(event) is not an array", l: logs });
    }
    const outputs = events.map(() => []);
    const errors = events.map(() => null);
    for (const item of value) {
      if (!isEventObject(item)) {
        if (events.length) errors[0] = "returned event in events array from transformBatch(events) is not an object";
        continue;
      }
      const i = inputIndex.get(item.messageId);
      if (events.length) outputs[i === undefined ? 0 : i].push(item);
    }
    const parts = outputs.map((o, i) => (errors[i] === null ? { o } : { o, e: errors[i] }));
    try {
      return '{"r":' + stringify(parts) + ',"l":' + stringify(logs) + "}";
    } catch (err) {
      return stringify({ b: describe(err), l: logs });
    }
  };

  const finish = (parts) => '{"r":[' + parts.join(",") + '],"l":' + stringify(logs) + "}";

  // Evaluates the module body; answers {"mode"} or {"error"} as JSON so the host never parses V8 messages.
  const load = function (getExports, exportedNames) {
    let exportsObject;
    try {
      exportsObject = getExports();
    } catch (err) {
      return stringify({ error: describe(err) });
    }
    const found = exportedNames.filter((name) => exportsObject[name] !== undefined);
    for (const name of ["transformEvent", "transformBatch"]) {
      if (typeof exportsObject[name] === "function" && found.indexOf(name) === -1) found.push(name);
    }
    const hasEvent = typeof exportsObject.transformEvent === "function";
    const hasBatch = typeof exportsObject.transformBatch === "function";
    if (hasEvent === hasBatch) {
      return stringify({
        error: "Expected one of transformEvent,transformBatch. Found " + (found.length ? found.join(",") : "none"),
      });
    }
    mode = hasEvent ? "event" : "batch";
    entry = hasEvent ? exportsObject.transformEvent : exportsObject.transformBatch;
    return stringify({ mode });
  };

  const run = function (payload) {
    const input = parse(payload);
    const events = input.events;
    const metas = input.metadata;
    logs = [];
    logChars = 0;
    bufferBudget = input.bufferBudget;
    pending = null;
    metadataById = new Map();
    const inputIndex = new Map();
    for (let i = 0; i < events.length; i++) {
      const meta = metas[i] || {};
      const ev = events[i];
      const id = meta.messageId !== undefined ? meta.messageId : ev !== null && typeof ev === "object" ? ev.messageId : undefined;
      if (id !== undefined && !metadataById.has(id)) {
        metadataById.set(id, meta);
        inputIndex.set(id, i);
      }
    }

    if (mode === "batch") {
      let value;
      try {
        value = entry(events, metadata);
      } catch (err) {
        return stringify({ b: describe(err), l: logs });
      }
      if (!isThenable(value)) return batchResult(value, events, inputIndex);
      const state = { out: null };
      pending = state;
      Promise.resolve(value).then(
        (v) => { state.out = batchResult(v, events, inputIndex); },
        (err) => { state.out = stringify({ b: describe(err), l: logs }); },
      );
      return PENDING;
    }

    const parts = new Array(events.length);
    let waiting = null;
    for (let i = 0; i < events.length; i++) {
      let value;
      try {
        value = entry(events[i], metadata);
      } catch (err) {
        parts[i] = errorResult(err);
        continue;
      }
      if (isThenable(value)) {
        if (waiting === null) waiting = [];
        waiting.push(
          Promise.resolve(value).then(
            (v) => { parts[i] = eventResult(v); },
            (err) => { parts[i] = errorResult(err); },
          ),
        );
      } else {
        parts[i] = eventResult(value);
      }
    }
    if (waiting === null) return finish(parts);
    const state = { out: null };
    pending = state;
    Promise.all(waiting).then(
      () => { state.out = finish(parts); },
      (err) => { state.out = stringify({ b: describe(err), l: logs }); },
    );
    return PENDING;
  };

  // Called after the microtask checkpoint that follows run(): the settled result, PENDING if a
  // promise can never settle (nothing outside this call can resolve it: no timers, no I/O), or IDLE
  // when run() answered synchronously. Always called, so that continuations the user left running
  // are bounded by this batch's time limit rather than blocking the next one.
  const collect = function () {
    if (pending === null) return IDLE;
    if (pending.out === null) return PENDING;
    const out = pending.out;
    pending = null;
    return out;
  };

  const host = Object.freeze({ load, run, collect, describe });
  Object.defineProperty(g, "__sluice", { value: host, writable: false, configurable: false, enumerable: false });
})();
//# sourceURL=sluice_runtime
