// The browser side of the chat: one Socket.IO connection, the event protocol from the README,
// and a DOM built only with createElement + textContent. Nothing a user typed is ever parsed as
// HTML, so a message like <img src=x onerror=...> is displayed, not executed.
//
// Sending is at-least-once: each message gets a client_id and waits in the outbox, shown as
// "sending", until the server's acknowledgement marks it "sent". After a reconnect the page joins
// its rooms again with `since` (the server fills the gap) and resends what is still unacknowledged;
// the server stores a resend once, so every message is shown once. After MAX_TRIES: "failed".
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const state = {
    me: null,                 // our nickname once the server accepted it
    current: null,            // key of the open conversation: "#room" or "@user"
    conversations: new Map(), // key -> {messages: Map(id -> message), unread: bool}
    presence: new Map(),      // room -> [users]
    typing: new Map(),        // room -> Map(username -> timeout handle)
    outbox: new Map(),        // client_id -> {key, event, payload, state, tries}
  };
  const MAX_TRIES = 5;
  const ACK_TIMEOUT_MS = 5000;
  const RETRYABLE = new Set(["rate_limited", "internal_error", "not_joined", "not_in_room"]);

  // Same origin as the page; the server only accepts its own origin by default.
  const socket = io({ transports: ["websocket", "polling"] });

  // ---- small DOM helpers (text only) ----------------------------------------------------------
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function clockTime(ts) {
    const date = new Date(ts);
    return isNaN(date) ? "" : date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }
  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = false;
    clearTimeout(showError.timer);
    showError.timer = setTimeout(() => { box.hidden = true; }, 6000);
  }

  // ---- conversations ---------------------------------------------------------------------------
  function conversation(key) {
    if (!state.conversations.has(key)) {
      state.conversations.set(key, { messages: new Map(), unread: false });
    }
    return state.conversations.get(key);
  }
  function addMessage(key, message) {
    // Keyed by id: a message that arrives both live and in the history is shown once, and
    // messages from several senders (or servers) are shown in id order whatever order they came.
    const conv = conversation(key);
    conv.messages.set(message.id, message);
    // Our own message coming back (live or in a history) was stored: it is sent, ack or not.
    const out = message.client_id && state.outbox.get(message.client_id);
    if (out && out.state === "sending") out.state = "sent";
    if (key !== state.current) conv.unread = true;
  }
  function openConversation(key) {
    state.current = key;
    conversation(key).unread = false;
    render();
    $("text").focus();
  }

  function render() {
    renderConversations();
    renderMessages();
    renderPresence();
    renderTyping();
    const key = state.current;
    $("title").textContent = key ? (key.startsWith("#") ? key : `private: ${key.slice(1)}`) : "";
    $("leave").hidden = !key || !key.startsWith("#");
  }
  function renderConversations() {
    const list = $("conversations");
    list.replaceChildren();
    for (const [key, conv] of state.conversations) {
      const item = el("li", "", key);
      if (key === state.current) item.classList.add("active");
      if (conv.unread) item.classList.add("unread");
      item.addEventListener("click", () => openConversation(key));
      list.append(item);
    }
  }
  function renderMessages() {
    const list = $("messages");
    list.replaceChildren();
    if (!state.current) return;
    const messages = [...conversation(state.current).messages.values()].sort((a, b) => a.id - b.id);
    for (const m of messages) {
      const item = el("li", m.private ? "private" : "");
      item.dataset.id = m.id;
      item.append(el("span", "meta", clockTime(m.ts)), el("span", "who", m.username), el("span", "text", m.text));
      const mine = m.client_id && state.outbox.get(m.client_id);
      if (mine) {  // our own message, acknowledged by the server
        item.dataset.state = "sent";
        item.append(el("span", "delivery", "sent"));
      }
      list.append(item);
    }
    // Not yet acknowledged: after the stored messages, in the order typed.
    for (const out of state.outbox.values()) {
      if (out.key !== state.current || out.state === "sent") continue;
      const item = el("li", "pending");
      item.dataset.state = out.state;
      item.append(el("span", "meta", ""), el("span", "who", state.me), el("span", "text", out.payload.text),
        el("span", "delivery", out.state === "failed" ? `failed (${out.error})` : "sending…"));
      list.append(item);
    }
    list.scrollTop = list.scrollHeight;
  }
  function renderPresence() {
    const list = $("presence");
    list.replaceChildren();
    const key = state.current;
    if (!key || !key.startsWith("#")) return;
    for (const user of state.presence.get(key.slice(1)) || []) {
      const item = el("li", user === state.me ? "me" : "", user);
      if (user !== state.me) item.addEventListener("click", () => openConversation("@" + user));
      list.append(item);
    }
  }
  function renderTyping() {
    const key = state.current;
    const names = key && key.startsWith("#") ? [...(state.typing.get(key.slice(1)) || new Map()).keys()] : [];
    $("typing").textContent = names.length ? `${names.join(", ")} ${names.length > 1 ? "are" : "is"} typing…` : "";
  }

  // ---- server -> client ------------------------------------------------------------------------
  socket.on("connect", () => {
    $("status").textContent = "online";
    $("status").className = "status online";
    if (state.me) {  // reconnected: the server forgot us, so join our rooms again, asking for
      // what we missed; then resend the unacknowledged (one connection's events are handled in order)
      for (const key of state.conversations.keys()) {
        if (!key.startsWith("#")) continue;
        const since = lastContiguousId(conversation(key));
        socket.emit("join", since === null ? { room: key.slice(1), username: state.me }
          : { room: key.slice(1), username: state.me, since });
      }
      for (const out of state.outbox.values()) if (out.state === "sending") transmit(out);
    }
  });
  socket.on("disconnect", () => {
    $("status").textContent = "offline";
    $("status").className = "status offline";
  });
  socket.on("history", ({ room, messages }) => {
    const first = !state.me;
    state.me = state.me || $("nickname").value;
    for (const m of messages) addMessage("#" + room, m);
    if (first) {
      $("login").hidden = true;
      $("chat").hidden = false;
    }
    if (first || state.current === null || state.pendingRoom === room) {
      state.pendingRoom = null;
      openConversation("#" + room);
    } else {
      render();
    }
  });
  socket.on("message", (m) => {
    addMessage("#" + m.room, m);
    const typers = state.typing.get(m.room);
    if (typers && typers.has(m.username)) { clearTimeout(typers.get(m.username)); typers.delete(m.username); }
    render();
  });
  socket.on("private_message", (pm) => {
    const other = pm.from === state.me ? pm.to : pm.from;
    // Private ids come from their own counter: keep them apart from room ids in the map.
    addMessage("@" + other, { id: pm.id, username: pm.from, text: pm.text, ts: pm.ts, private: true,
      client_id: pm.client_id });
    render();
  });
  socket.on("presence", ({ room, users }) => {
    state.presence.set(room, users);
    renderPresence();
  });
  socket.on("typing", ({ room, username }) => {
    if (!state.typing.has(room)) state.typing.set(room, new Map());
    const typers = state.typing.get(room);
    clearTimeout(typers.get(username));
    typers.set(username, setTimeout(() => { typers.delete(username); renderTyping(); }, 3000));
    renderTyping();
  });
  socket.on("error", ({ code, message }) => showError(`${message} (${code})`));
  socket.on("connect_error", () => showError("cannot reach the chat server; retrying…"));

  // ---- the outbox -------------------------------------------------------------------------------
  function newClientId() {
    const bytes = crypto.getRandomValues(new Uint8Array(16));   // works on plain http too
    return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  }
  function lastContiguousId(conv) {
    // Not the highest id: messages from several senders can arrive out of id order, so holding 7
    // does not mean holding 6. From the first hole on, the server refills exactly the gap.
    const ids = [...conv.messages.keys()].filter((id) => typeof id === "number");
    if (!ids.length) return null;
    const held = new Set(ids);
    let last = Math.min(...ids);
    while (held.has(last + 1)) last += 1;
    return last;
  }
  function queue(key, event, payload) {
    const out = { key, event, payload: { ...payload, client_id: newClientId() }, state: "sending", tries: 0 };
    state.outbox.set(out.payload.client_id, out);
    transmit(out);
    render();
  }
  function transmit(out) {
    // Offline, Socket.IO would buffer the emit and flush it on reconnect *before* our re-join;
    // instead it waits here and the "connect" handler resends it after the join.
    if (out.state !== "sending" || !socket.connected) return;
    if (out.tries >= MAX_TRIES) { fail(out, "no acknowledgement"); return; }
    out.tries += 1;
    socket.timeout(ACK_TIMEOUT_MS).emit(out.event, out.payload, (err, ack) => {
      if (out.state !== "sending") return;
      if (err) { transmit(out); return; }                       // no ack in time: send again
      if (ack && ack.ok) {
        out.state = "sent";
        if (out.event === "message") {  // shown at once with its id; the broadcast copy merges in
          addMessage(out.key, { id: ack.id, room: out.payload.room, username: state.me, text: out.payload.text,
            ts: ack.ts, client_id: out.payload.client_id });
        }
      } else if (ack && RETRYABLE.has(ack.code)) {
        setTimeout(() => transmit(out), 500 * out.tries);
        return;
      } else {
        fail(out, (ack && ack.code) || "refused");
        return;
      }
      render();
    });
  }
  function fail(out, error) {
    out.state = "failed";
    out.error = error;
    render();
  }

  // ---- client -> server ------------------------------------------------------------------------
  let lastTyping = 0;
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    state.pendingRoom = $("room").value;
    socket.emit("join", { room: $("room").value, username: $("nickname").value });
  });
  $("join-room").addEventListener("submit", (event) => {
    event.preventDefault();
    const room = $("new-room").value.trim();
    if (!room) return;
    state.pendingRoom = room;
    socket.emit("join", { room, username: state.me });
    $("new-room").value = "";
  });
  $("leave").addEventListener("click", () => {
    const key = state.current;
    if (!key || !key.startsWith("#")) return;
    socket.emit("leave", { room: key.slice(1) });
    state.conversations.delete(key);
    state.presence.delete(key.slice(1));
    state.current = state.conversations.keys().next().value || null;
    render();
  });
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("text").value;
    const key = state.current;
    if (!text.trim() || !key) return;
    if (key.startsWith("#")) queue(key, "message", { room: key.slice(1), text });
    else queue(key, "private_message", { to: key.slice(1), text });
    $("text").value = "";
    lastTyping = 0;  // a sent message clears our indicator on the others' screens: allow a new one
  });
  $("text").addEventListener("input", () => {
    const key = state.current;
    const now = Date.now();
    if (key && key.startsWith("#") && now - lastTyping > 1500) {  // well under the server's limit
      lastTyping = now;
      socket.emit("typing", { room: key.slice(1) });
    }
  });
})();
