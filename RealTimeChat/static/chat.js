// The browser side of the chat: one Socket.IO connection, the event protocol from the README,
// and a DOM built only with createElement + textContent. Nothing a user typed is ever parsed as
// HTML, so a message like <img src=x onerror=...> is displayed, not executed.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const state = {
    me: null,                 // our nickname once the server accepted it
    current: null,            // key of the open conversation: "#room" or "@user"
    conversations: new Map(), // key -> {messages: Map(id -> message), unread: bool}
    presence: new Map(),      // room -> [users]
    typing: new Map(),        // room -> Map(username -> timeout handle)
  };

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
    if (state.me) {  // reconnected: the server forgot us, so join our rooms again
      for (const key of state.conversations.keys()) {
        if (key.startsWith("#")) socket.emit("join", { room: key.slice(1), username: state.me });
      }
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
    addMessage("@" + other, { id: pm.id, username: pm.from, text: pm.text, ts: pm.ts, private: true });
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
    if (key.startsWith("#")) socket.emit("message", { room: key.slice(1), text });
    else socket.emit("private_message", { to: key.slice(1), text });
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
