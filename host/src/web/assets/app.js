// Live progress for a campaign page (server-sent events), and a
// confirmation before irreversible actions. Everything here enhances a page
// that is complete without it.

const section = document.querySelector("[data-events]");
if (section) {
  const bar = section.querySelector("progress");
  const text = section.querySelector("[data-progress-text]");
  const badge = section.querySelector("[data-status]");
  const chart = section.querySelector("[data-chart]");
  // Sent per minute: the last 30 minutes, from the deltas between events.
  const minutes = new Map();
  let lastSent = null;
  let startStatus = badge ? badge.textContent : null;
  const source = new EventSource(section.dataset.events);
  source.addEventListener("progress", (e) => {
    const p = JSON.parse(e.data);
    const percent = p.total ? Math.floor((p.done * 100) / p.total) : 0;
    bar.max = Math.max(p.total, 1);
    bar.value = p.done;
    bar.textContent = percent + "%";
    text.textContent = `${p.done} of ${p.total} done (${percent}%): ${p.sent} sent, ${p.failed} failed, ` +
      `${p.skipped} skipped, ${p.cancelled} cancelled, ${p.queued} queued.`;
    if (badge) {
      badge.textContent = p.status;
      badge.className = "badge status-" + p.status;
    }
    const minute = Math.floor(Date.now() / 60000);
    if (lastSent !== null) {
      minutes.set(minute, (minutes.get(minute) || 0) + Math.max(p.sent - lastSent, 0));
    }
    lastSent = p.sent;
    draw(minute);
    // A status change changes which actions are allowed: show the page anew.
    if (startStatus !== null && p.status !== startStatus && ["sent", "cancelled", "paused", "sending"].includes(p.status)) {
      startStatus = p.status;
      if (p.status === "sent" || p.status === "cancelled") {
        source.close();
      }
    }
  });
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) return;
  };
  function draw(now) {
    if (!chart) return;
    const values = [];
    for (let m = now - 29; m <= now; m++) values.push(minutes.get(m) || 0);
    const max = Math.max(...values, 1);
    chart.replaceChildren(...values.map((v, i) => {
      const bar = document.createElement("span");
      bar.style.height = `${(v * 100) / max}%`;
      bar.title = `${v} sent, ${29 - i} min ago`;
      return bar;
    }));
  }
}

for (const button of document.querySelectorAll("button[data-confirm]")) {
  button.form.addEventListener("submit", (e) => {
    if (!window.confirm(button.dataset.confirm)) e.preventDefault();
  });
}

// Posts `form` to `url` a moment after each change and hands the JSON
// answer to `show` (only the newest answer: an older one arriving late is
// dropped); `failed` says so when the server cannot be reached.
function live(form, url, show, failed) {
  let timer = null;
  let latest = 0;
  const ask = async () => {
    const mine = ++latest;
    try {
      const res = await fetch(url, { method: "POST", body: new URLSearchParams(new FormData(form)) });
      const answer = await res.json();
      if (mine === latest) show(answer);
    } catch {
      if (mine === latest) failed();
    }
  };
  form.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(ask, 400);
  });
  return ask;
}

// The draft form's live preview: the form as it stands, rendered by the
// server (the personalizer, as a send would) a moment after each change.
const draft = document.querySelector("form.draft");
if (draft && draft.querySelector("[data-live-html]")) {
  const subject = draft.querySelector("[data-live-subject]");
  const html = draft.querySelector("[data-live-html]");
  const text = draft.querySelector("[data-live-text]");
  const error = draft.querySelector("[data-live-error]");
  live(draft, "/campaigns/preview", (p) => {
    error.textContent = p.error || "";
    if (p.error) return;
    subject.textContent = p.subject;
    html.srcdoc = p.html;
    text.textContent = p.text;
  }, () => { error.textContent = "The preview cannot be rendered right now."; });
}

// The segment builder's live count: the rules as they stand, counted by
// the server a moment after each change (or the error saving would give).
const segmentForm = document.querySelector("form.segment");
if (segmentForm) {
  const out = segmentForm.querySelector("[data-live-count]");
  const count = live(segmentForm, "/segments/count", (c) => {
    out.textContent = c.error ? c.error : `${c.count} match now, ${c.subscribed} of them subscribed.`;
  }, () => { out.textContent = "The count cannot be had right now."; });
  count();
}
