// The Switchboard demo page: a video conversation through the unchanged Nexmo JavaScript SDK
// 4.1.0 (nexmo-client on npm), which /sdk/conversationClient.js serves as the global
// ConversationClient. The SDK speaks socket.io to the node's realtime API at /rtc.
(function () {
  'use strict';

  // Groups the page's SDK listeners, so that leaving a conversation removes exactly these.
  const LISTENER_GROUP = 'switchboard-demo';

  const MUTE_EVENTS = ['audio:mute:on', 'audio:mute:off', 'video:mute:on', 'video:mute:off'];

  const elements = {};
  for (const id of [
    'token-mode', 'setup-message', 'join-form', 'user-name', 'conversation-name', 'join-button',
    'status', 'incoming-call', 'incoming-call-text', 'incoming-call-accept',
    'incoming-call-decline', 'call', 'call-title', 'mute-camera', 'mute-microphone',
    'leave-button', 'invite-form', 'invite-name', 'videos', 'local-video', 'local-caption',
    'notices',
  ]) {
    elements[id] = document.getElementById(id);
  }

  // The hook for browser tests: the SDK objects in use and every event the page handled.
  const demo = {
    config: null,
    client: null,
    application: null,
    conversation: null,
    userName: null,
    events: [],
  };
  window.switchboardDemo = demo;

  // Members whose media events the page listens to, to release on leaving.
  const watchedMembers = new Set();
  // Invitations that wait for Accept or Decline, the one shown first.
  const invitations = [];
  // The conversation that Join is entering, {name, id}, with the id once the token service
  // returned it.
  let requestedConversation = null;
  // The `to` of each mute event as it came off the socket, by conversation and event id. The
  // SDK's Event objects do not keep `to`.
  const muteTargets = new Map();
  let cameraMuted = false;
  let microphoneMuted = false;

  function record(type, fields) {
    demo.events.push(Object.assign({ type: type, time: new Date().toISOString() }, fields));
  }

  function notice(text) {
    const item = document.createElement('li');
    item.textContent = text;
    elements.notices.prepend(item);
    record('notice', { text: text });
  }

  function setStatus(text, isError) {
    elements.status.textContent = text;
    elements.status.classList.toggle('error', Boolean(isError));
  }

  // Formats an SDK error (NexmoApiError carries the server's `type` and `description`), a
  // fetch error or anything else thrown.
  function describeError(error) {
    if (error && error.type) {
      const detail = [error.description, error.detail, error.title].find(function (text) {
        return typeof text === 'string' && text !== '';
      });
      return detail ? error.type + ': ' + detail : error.type;
    }
    if (error && error.message) {
      return error.message;
    }
    return String(error);
  }

  function memberName(member) {
    if (member && member.user && member.user.name) {
      return member.user.name;
    }
    return 'a member';
  }

  function isMe(member) {
    const me = demo.application && demo.application.me;
    return Boolean(me && member && member.user && member.user.id === me.id);
  }

  // ---- Tokens ----

  async function readJson(response) {
    try {
      return await response.json();
    } catch (error) {
      return {};
    }
  }

  // Gets a user token, and with a conversation name also has the user put into that
  // conversation, because a user reads only conversations it is an INVITED or JOINED member of.
  // The token service is demo.token_url when it is set. Otherwise the node mints tokens, which
  // it does only when it signs with the development secret. Returns {token, conversation}, where
  // conversation is {id, name} or null.
  async function fetchToken(userName, conversationName) {
    const config = demo.config;
    let response;
    let service;
    if (config.token_url) {
      const url = new URL(config.token_url, window.location.href);
      url.searchParams.set('user', userName);
      if (conversationName) {
        url.searchParams.set('conversation', conversationName);
      }
      service = 'the token service ' + url.origin + url.pathname;
      response = await fetch(url);
    } else if (config.mint_tokens) {
      const request = { user: userName };
      if (conversationName) {
        request.conversation = conversationName;
      }
      service = 'the node';
      response = await fetch('/demo/token', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(request),
      });
    } else {
      throw new Error('this node gives the page no tokens: set demo.token_url to the ' +
        "application's token service");
    }

    const body = await readJson(response);
    if (!response.ok) {
      throw new Error('no token for ' + JSON.stringify(userName) + ': ' + service +
        ' returned ' + response.status + (body.detail ? ': ' + body.detail : ''));
    }
    if (typeof body.token !== 'string') {
      throw new Error(service + ' returned no "token" string');
    }
    if (!conversationName) {
      return { token: body.token, conversation: null };
    }
    const conversation = body.conversation;
    if (!conversation || typeof conversation.id !== 'string') {
      throw new Error(service + ' returned no "conversation" with an "id" string, so ' +
        userName + ' is not a member of ' + JSON.stringify(conversationName) + ': the ' +
        'service must put the user into the conversation it names');
    }
    return { token: body.token, conversation: conversation };
  }

  // ---- Session ----

  function isLoggedInAs(userName) {
    return Boolean(demo.client && demo.userName === userName);
  }

  // Logs in as `userName` with `token`, or reuses the session when that user is logged in
  // already: the session stays valid, so the new token goes unused.
  async function logIn(userName, token) {
    if (isLoggedInAs(userName)) {
      return demo.application;
    }
    if (demo.client) {
      // The join form is disabled during a conversation, so the old user has no media to end.
      demo.client.disconnect();
      demo.client = null;
      demo.application = null;
      demo.userName = null;
    }

    const client = new window.ConversationClient({
      url: window.location.origin,
      path: '/rtc',
      iceServers: [],
      cache: false,
      sync: 'lite',
      socket_io: {
        transports: ['websocket'],
        reconnection: false,
        forceNew: true,
        autoConnect: true,
      },
    });
    demo.client = client;
    client.on('disconnect', function () {
      record('disconnect', {});
      if (demo.client === client) {
        setStatus('The connection to the node closed. Reload the page to log in again.', true);
      }
    });
    client.connection.io.on('packet', rememberMuteTarget);
    // login() waits for its reply without a timeout, so a socket that never opens would leave
    // it pending: the connection error rejects in its place.
    const connectFailed = new Promise(function (resolve, reject) {
      client.connection.on('connect_error', function (error) {
        reject(new Error("could not connect to the node's realtime API at /rtc (" +
          describeError(error) + ')'));
      });
    });

    let application;
    try {
      application = await Promise.race([client.login(token), connectFailed]);
    } catch (error) {
      client.disconnect();
      demo.client = null;
      throw error;
    }
    demo.application = application;
    demo.userName = userName;
    record('login', { user: userName });
    application.on('member:invited', onInvited);
    return application;
  }

  function rememberMuteTarget(packet) {
    // socket.io packet type 2 is an event, whose data is [name, payload].
    if (packet.type !== 2 || !MUTE_EVENTS.includes(packet.data[0])) {
      return;
    }
    const payload = packet.data[1] || {};
    if (payload.to) {
      muteTargets.set(payload.cid + '/' + payload.id, payload.to);
    }
  }

  // ---- Conversations ----

  // Joins the conversation unless already joined, then publishes camera and microphone.
  async function enterConversation(conversation) {
    demo.conversation = conversation;
    watchConversation(conversation);
    showCall(conversation);

    if (!conversation.me || conversation.me.state !== 'JOINED') {
      setStatus('Joining ' + conversationLabel(conversation) + '…');
      await conversation.join();
    }
    record('joined', { conversation: conversation.name, member: conversation.me.id });
    watchMembers(conversation);
    watchMe(conversation);

    if (!conversation.is_video_conversation) {
      throw new Error('conversation ' + JSON.stringify(conversation.name) + ' was created ' +
        'without properties.video, so the SDK cannot send video in it');
    }
    setStatus('Starting camera and microphone…');
    const localStream = await conversation.media.enable({ video: 'both', audio: true });
    elements['local-video'].srcObject = localStream;
    setStatus('In ' + conversationLabel(conversation) + ' as ' + demo.userName + '.');
  }

  function conversationLabel(conversation) {
    return JSON.stringify(conversation.display_name || conversation.name || conversation.id);
  }

  // Leaves the current conversation: ends the media legs, then the membership.
  async function leaveConversation() {
    const conversation = demo.conversation;
    if (!conversation) {
      return;
    }
    try {
      await conversation.media.disable();
    } catch (error) {
      record('media:disable:failed', { error: describeError(error) });
    }
    try {
      if (conversation.me && conversation.me.state !== 'LEFT') {
        await conversation.leave();
        notice('You left ' + conversationLabel(conversation));
      }
    } finally {
      resetCall();
    }
  }

  function watchConversation(conversation) {
    conversation.on('member:joined', LISTENER_GROUP, function (member) {
      record('member:joined', { member: member.id, name: memberName(member) });
      watchMember(member);
      if (!isMe(member)) {
        notice(memberName(member) + ' joined');
      }
    });
    conversation.on('member:left', LISTENER_GROUP, function (member) {
      record('member:left', { member: member.id, name: memberName(member) });
      removeTiles(member.id);
      if (isMe(member)) {
        notice('You left ' + conversationLabel(conversation));
        if (demo.conversation === conversation) {
          resetCall();
        }
      } else {
        notice(memberName(member) + ' left');
      }
    });
    conversation.on('member:invited', LISTENER_GROUP, function (member, event) {
      record('member:invited', { member: member.id, name: memberName(member) });
      if (isMe(member)) {
        // The page's own token request invited the user, which is joining already.
        return;
      }
      const inviter = event.body && event.body.invited_by;
      notice(memberName(member) + ' was invited' + (inviter ? ' by ' + inviter : ''));
    });
    // The SDK needs the publisher's Member before it answers the node's offer, so by now
    // the member exists and its media:stream:on listener can be added.
    conversation.on('rtc:offer', LISTENER_GROUP, function () {
      watchMembers(conversation);
    });
    for (const type of MUTE_EVENTS) {
      conversation.on(type, LISTENER_GROUP, function (member, event) {
        // The packet listener that remembers `to` runs after the SDK's own, so it is read
        // once the current packet is handled.
        Promise.resolve().then(function () {
          onMuteEvent(conversation, type, member, event);
        });
      });
    }
  }

  function onMuteEvent(conversation, type, actor, event) {
    const target = mutedMember(conversation, event) || actor;
    const [kind, , state] = type.split(':');
    const device = kind === 'audio' ? 'microphone' : 'camera';
    const verb = state === 'on' ? 'muted' : 'unmuted';
    record(type, {
      from: actor && actor.id,
      to: target && target.id,
      name: memberName(target),
      by: memberName(actor),
      streamIndex: event.streamIndex,
    });
    if (target === actor || (target && actor && target.id === actor.id)) {
      notice(memberName(actor) + ' ' + verb + ' their ' + device);
    } else {
      notice(memberName(actor) + ' ' + verb + ' ' + memberName(target) + "'s " + device);
    }
    if (isMe(target)) {
      setMuted(device, state === 'on');
    }
  }

  // Finds the member whose media a mute event is about: its `to`, or the owner of its leg.
  function mutedMember(conversation, event) {
    const key = event.cid + '/' + event.id;
    const to = muteTargets.get(key);
    muteTargets.delete(key);
    if (to && conversation.members.has(to)) {
      return conversation.members.get(to);
    }
    const rtcId = event.body && event.body.rtc_id;
    if (!rtcId) {
      return null;
    }
    if (conversation.media.rtcObjects[rtcId]) {
      return conversation.me;
    }
    const remote = (conversation.remoteMembers || []).find(function (leg) {
      return leg.remote_leg_id === rtcId;
    });
    return remote ? remote.remote_member : null;
  }

  // ---- Video tiles ----

  function watchMembers(conversation) {
    for (const member of conversation.members.values()) {
      watchMember(member);
    }
  }

  function watchMember(member) {
    if (watchedMembers.has(member) || isMe(member)) {
      return;
    }
    watchedMembers.add(member);
    member.on('media:stream:on', LISTENER_GROUP, function (stream) {
      record('media:stream:on', {
        member: member.id,
        name: memberName(member),
        streamIndex: stream.streamIndex,
      });
      addTile(member, stream);
    });
    member.on('media:stream:off', LISTENER_GROUP, function (stream) {
      record('media:stream:off', {
        member: member.id,
        name: memberName(member),
        streamIndex: stream.streamIndex,
      });
      removeTile(member.id, stream.streamIndex);
    });
  }

  // Enables the mute buttons once the SDK has the local leg that mute requests name.
  function watchMe(conversation) {
    const me = conversation.me;
    if (!me || watchedMembers.has(me)) {
      return;
    }
    watchedMembers.add(me);
    me.on('media:stream:on', LISTENER_GROUP, function (stream) {
      record('local:stream:on', { streamIndex: stream.streamIndex });
      elements['mute-camera'].disabled = false;
      elements['mute-microphone'].disabled = false;
    });
  }

  function tileSelector(memberId, streamIndex) {
    let selector = '.remote-tile[data-member-id="' + CSS.escape(memberId) + '"]';
    if (streamIndex !== undefined) {
      selector += '[data-stream-index="' + CSS.escape(String(streamIndex)) + '"]';
    }
    return selector;
  }

  function addTile(member, stream) {
    removeTile(member.id, stream.streamIndex);
    const tile = document.createElement('figure');
    tile.className = 'tile remote-tile';
    tile.dataset.memberId = member.id;
    tile.dataset.memberName = memberName(member);
    tile.dataset.streamIndex = String(stream.streamIndex);

    const video = document.createElement('video');
    video.autoplay = true;
    video.playsInline = true;
    video.dataset.memberId = member.id;
    video.dataset.memberName = memberName(member);
    video.srcObject = stream.stream;

    const caption = document.createElement('figcaption');
    caption.textContent = memberName(member);
    tile.append(video, caption);
    elements.videos.append(tile);
  }

  function removeTile(memberId, streamIndex) {
    for (const tile of elements.videos.querySelectorAll(tileSelector(memberId, streamIndex))) {
      tile.remove();
    }
  }

  function removeTiles(memberId) {
    removeTile(memberId, undefined);
  }

  // ---- Call controls ----

  function showCall(conversation) {
    elements['call-title'].textContent = conversation.display_name || conversation.name;
    elements['call'].dataset.conversationName = conversation.name || '';
    elements['local-caption'].textContent = demo.userName + ' (you)';
    elements['call'].hidden = false;
    elements['join-button'].disabled = true;
    elements['conversation-name'].value = conversation.name || '';
  }

  function resetCall() {
    if (demo.conversation) {
      demo.conversation.releaseGroup(LISTENER_GROUP);
    }
    for (const member of watchedMembers) {
      member.releaseGroup(LISTENER_GROUP);
    }
    watchedMembers.clear();
    for (const tile of elements.videos.querySelectorAll('.remote-tile')) {
      tile.remove();
    }
    const localVideo = elements['local-video'];
    if (localVideo.srcObject) {
      for (const track of localVideo.srcObject.getTracks()) {
        track.stop();
      }
    }
    localVideo.srcObject = null;
    demo.conversation = null;
    setMuted('camera', false);
    setMuted('microphone', false);
    elements['mute-camera'].disabled = true;
    elements['mute-microphone'].disabled = true;
    elements['call'].hidden = true;
    elements['join-button'].disabled = false;
  }

  function setMuted(device, muted) {
    const button = device === 'camera' ? elements['mute-camera'] : elements['mute-microphone'];
    if (device === 'camera') {
      cameraMuted = muted;
    } else {
      microphoneMuted = muted;
    }
    button.dataset.muted = String(muted);
    button.textContent = (muted ? 'Unmute ' : 'Mute ') + device;
  }

  // media.mute(mute, audio, video) sends one request per local leg for each kind chosen.
  async function toggleMute(device) {
    const conversation = demo.conversation;
    if (!conversation) {
      return;
    }
    const mute = device === 'camera' ? !cameraMuted : !microphoneMuted;
    const audio = device === 'microphone';
    try {
      await conversation.media.mute(mute, audio, !audio);
      setMuted(device, mute);
    } catch (error) {
      setStatus('Could not ' + (mute ? 'mute' : 'unmute') + ' the ' + device + ': ' +
        describeError(error), true);
    }
  }

  // ---- Invitations ----

  // Whether the page asked for this conversation itself: the token service invites the user
  // into the conversation that Join names, and a session that is logged in already receives
  // that invitation while the page is joining.
  function isRequestedConversation(conversation) {
    const requested = requestedConversation;
    if (requested && (conversation.id === requested.id || conversation.name === requested.name)) {
      return true;
    }
    return Boolean(demo.conversation && demo.conversation.id === conversation.id);
  }

  function onInvited(member, event) {
    const me = demo.application.me;
    const invitee = event.body && event.body.user;
    if (!invitee || (invitee.id !== me.id && invitee.name !== me.name)) {
      return;
    }
    const conversation = demo.application.conversations[event.cid];
    if (!conversation) {
      return;
    }
    if (isRequestedConversation(conversation)) {
      record('invitation:requested', { conversation: conversation.name });
      return;
    }
    const inviter = (event.body && event.body.invited_by) || 'Someone';
    record('invitation', { conversation: conversation.name, from: inviter });
    invitations.push({ conversation: conversation, inviter: inviter });
    if (invitations.length === 1) {
      showInvitation();
    }
  }

  function dropInvitations(conversationId) {
    const waiting = invitations.filter(function (invitation) {
      return invitation.conversation.id !== conversationId;
    });
    if (waiting.length === invitations.length) {
      return;
    }
    invitations.splice(0, invitations.length, ...waiting);
    showInvitation();
  }

  function showInvitation() {
    const invitation = invitations[0];
    const box = elements['incoming-call'];
    if (!invitation) {
      box.hidden = true;
      return;
    }
    elements['incoming-call-text'].textContent = invitation.inviter + ' invites you to ' +
      conversationLabel(invitation.conversation) + '.';
    box.dataset.conversationName = invitation.conversation.name || '';
    box.dataset.inviter = invitation.inviter;
    box.hidden = false;
  }

  async function answerInvitation(accept) {
    const invitation = invitations.shift();
    showInvitation();
    if (!invitation) {
      return;
    }
    const conversation = invitation.conversation;
    setStatus('');
    try {
      if (!accept) {
        await conversation.leave();
        record('invitation:declined', { conversation: conversation.name });
        notice('You declined ' + conversationLabel(conversation));
        return;
      }
      if (demo.conversation && demo.conversation !== conversation) {
        await leaveConversation();
      }
      record('invitation:accepted', { conversation: conversation.name });
      await enterConversation(conversation);
    } catch (error) {
      setStatus((accept ? 'Accepting' : 'Declining') + ' the invitation failed: ' +
        describeError(error), true);
    }
  }

  // ---- Wiring ----

  elements['join-form'].addEventListener('submit', async function (submitEvent) {
    submitEvent.preventDefault();
    const userName = elements['user-name'].value;
    const conversationName = elements['conversation-name'].value;
    elements['join-button'].disabled = true;
    try {
      if (conversationName === '') {
        await logInToWait(userName);
        elements['join-button'].disabled = false;
        return;
      }
      await joinByName(userName, conversationName);
    } catch (error) {
      setStatus('Joining failed: ' + describeError(error), true);
      record('join:failed', { error: describeError(error) });
      if (!demo.conversation) {
        elements['join-button'].disabled = false;
      }
    } finally {
      requestedConversation = null;
    }
  });

  async function logInToWait(userName) {
    setStatus('Logging in as ' + userName + '…');
    if (!isLoggedInAs(userName)) {
      const grant = await fetchToken(userName, null);
      await logIn(userName, grant.token);
    }
    setStatus('Logged in as ' + userName + ', waiting for invitations.');
  }

  // Has the token service put the user into the conversation, then loads it by the id that the
  // service returned and joins it. A user token cannot look a conversation up by name.
  async function joinByName(userName, conversationName) {
    requestedConversation = { name: conversationName, id: null };
    setStatus('Getting a token for ' + userName + ' in ' + JSON.stringify(conversationName) +
      '…');
    const grant = await fetchToken(userName, conversationName);
    requestedConversation.id = grant.conversation.id;
    record('token', { user: userName, conversation: grant.conversation.id });

    setStatus('Logging in as ' + userName + '…');
    const application = await logIn(userName, grant.token);
    setStatus('Loading conversation ' + JSON.stringify(conversationName) + '…');
    const conversation = await application.getConversation(grant.conversation.id);
    // An earlier invitation to this conversation would offer a second way in.
    dropInvitations(conversation.id);
    await enterConversation(conversation);
  }

  elements['mute-camera'].addEventListener('click', function () {
    toggleMute('camera');
  });
  elements['mute-microphone'].addEventListener('click', function () {
    toggleMute('microphone');
  });

  elements['leave-button'].addEventListener('click', async function () {
    try {
      await leaveConversation();
      setStatus('');
    } catch (error) {
      setStatus('Leaving failed: ' + describeError(error), true);
    }
  });

  elements['invite-form'].addEventListener('submit', async function (submitEvent) {
    submitEvent.preventDefault();
    const userName = elements['invite-name'].value;
    if (!demo.conversation) {
      return;
    }
    try {
      await demo.conversation.invite({ user_name: userName });
      notice('You invited ' + userName);
      elements['invite-name'].value = '';
    } catch (error) {
      setStatus('Inviting ' + userName + ' failed: ' + describeError(error), true);
    }
  });

  elements['incoming-call-accept'].addEventListener('click', function () {
    answerInvitation(true);
  });
  elements['incoming-call-decline'].addEventListener('click', function () {
    answerInvitation(false);
  });

  // Some SDK failures reject no promise of the page's, such as a failed getUserMedia, which
  // media.enable leaves unhandled. The step that waits for them never ends, so Join is
  // offered again.
  window.addEventListener('unhandledrejection', function (rejection) {
    setStatus('Failed: ' + describeError(rejection.reason), true);
    record('unhandledrejection', { error: describeError(rejection.reason) });
    if (!demo.conversation) {
      elements['join-button'].disabled = false;
    }
  });

  async function loadConfig() {
    const response = await fetch('/demo/config.json');
    if (!response.ok) {
      throw new Error('GET /demo/config.json returned ' + response.status);
    }
    return response.json();
  }

  function describeTokenMode(config) {
    if (config.token_url) {
      return 'Tokens come from the application at ' + config.token_url + '.';
    }
    if (config.mint_tokens) {
      return 'Development node: it creates the user and mints a token for any name you type, ' +
        'and puts the user into the conversation you name.';
    }
    return 'This node mints no tokens and has no demo.token_url, so nobody can log in here.';
  }

  async function start() {
    if (typeof window.ConversationClient !== 'function') {
      elements['setup-message'].hidden = false;
      elements['token-mode'].textContent = '';
      return;
    }
    try {
      demo.config = await loadConfig();
    } catch (error) {
      elements['token-mode'].textContent = 'Could not load the page settings: ' +
        describeError(error);
      elements['token-mode'].classList.add('error');
      return;
    }
    elements['token-mode'].textContent = describeTokenMode(demo.config);
    elements['join-button'].disabled = false;
  }

  start();
})();
