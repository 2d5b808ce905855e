// The only place the UI touches Tauri's IPC bridge (`window.__TAURI_INTERNALS__`).
// Keeping it here means the app needs no npm package or bundler, and the tests only have to
// stand in for two functions: `invoke` and `transformCallback`.

function internals() {
  const t = window.__TAURI_INTERNALS__;
  if (!t || typeof t.invoke !== 'function') {
    throw new Error('The Tauri bridge is not available (is the page running inside the app?)');
  }
  return t;
}

/**
 * Calls a Rust command. Resolves with its result; rejects with the command's error value
 * (for this app: `{kind, message, reason?}`).
 */
export function invoke(cmd, args = {}) {
  try {
    return internals().invoke(cmd, args);
  } catch (e) {
    return Promise.reject({ kind: 'bridge', message: String(e && e.message ? e.message : e) });
  }
}

/**
 * Listens to an app-wide Tauri event. `handler` gets the payload only.
 * This is what `@tauri-apps/api/event`'s `listen` does, minus unlisten (the UI listens for
 * its whole lifetime).
 */
export function listen(event, handler) {
  const t = internals();
  const id = t.transformCallback((msg) => handler(msg ? msg.payload : undefined));
  return t.invoke('plugin:event|listen', { event, target: { kind: 'Any' }, handler: id });
}
