// {{name}}: a Posta transport written in JavaScript.
//
// Each message is POSTed as JSON to the `url` in the transport's config with
// `fetch`, which ComponentizeJS's engine (StarlingMonkey) runs on the host's
// wasi:http: the operator lists the URL's origin under the transport's
// `capabilities.http`, and the host refuses any other.
//
// 2xx -> sent; 408, 429 and 5xx -> transient (the host retries with backoff);
// any other status -> permanent. Refused connections and timeouts are
// transient; an origin the host does not grant is permanent.
//
// `deliver` may be async: the engine runs the event loop until the promise
// settles. A thrown `{ tag, val }` is the WIT `delivery-error`; anything
// else thrown (an Error) would trap the instance, so every failure below
// is caught and classified.

import { config, log } from 'posta:plugin/host@0.1.0';

const transient = (val) => ({ tag: 'transient', val });
const permanent = (val) => ({ tag: 'permanent', val });

// `scheme://host[:port]`: error texts are stored with the message, and a
// URL's path or query often holds a token.
function origin(url) {
  const [scheme, rest = ''] = url.split('://');
  const authority = rest.split(/[/?#]/)[0].split('@').pop();
  return `${scheme}://${authority}`;
}

function payload(m) {
  return JSON.stringify({
    message_id: m.messageId,
    from: { email: m.from.email, name: m.from.name },
    to: { email: m.to.email, name: m.to.name },
    subject: m.subject,
    html: m.html,
    text: m.text,
    headers: m.headers.map((h) => ({ name: h.name, value: h.value })),
  });
}

export async function deliver(message) {
  const url = config('url');
  if (!url) throw permanent('config: url is not set');
  const timeoutMs = Number(config('timeout_ms') ?? '5000');
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw permanent('config: timeout_ms is not a number');

  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  let response;
  let text;
  try {
    response = await fetch(url, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        // The message id is stable across retries: receivers deduplicate on it.
        'idempotency-key': message.messageId,
        'user-agent': '{{name}}/0.1 (posta plugin, js)',
      },
      body: payload(message),
      signal: abort.signal,
    });
    text = await response.text();
  } catch (e) {
    if (abort.signal.aborted) throw transient(`timed out after ${timeoutMs} ms waiting for ${origin(url)}`);
    const reason = String(e && e.message ? e.message : e);
    if (/denied|HttpRequestDenied|forbidden/i.test(reason)) {
      throw permanent(`${origin(url)} is not in this transport's capabilities.http`);
    }
    throw transient(`${origin(url)}: ${reason.slice(0, 200)}`);
  } finally {
    clearTimeout(timer);
  }

  const detail = `HTTP ${response.status}`;
  if (response.ok) return { remoteId: undefined, detail };
  const snippet = text.slice(0, 200);
  log('warn', `${message.messageId}: ${detail} ${snippet}`);
  if (response.status === 408 || response.status === 429 || response.status >= 500) {
    throw transient(`${detail} ${snippet}`);
  }
  throw permanent(`${detail} ${snippet}`);
}
