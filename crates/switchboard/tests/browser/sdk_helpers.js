// Test helpers for the browser tests, installed as `window.sbt` into a page that has loaded the
// Nexmo JavaScript SDK 4.1.0 (the global `ConversationClient`). They drive the SDK through its
// public API and keep what it emits in plain arrays, so that the Rust test can read them back
// as JSON. Every wait has a deadline.
(() => {
  if (window.sbt) {
    return;
  }
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // NexmoApiError carries the server's reply (type, description) in its own fields.
  const describe = (error) => {
    if (error === undefined || error === null) {
      return String(error);
    }
    let fields = '';
    try {
      fields = JSON.stringify(error);
    } catch (_) {
      fields = '';
    }
    if (!(error instanceof Error) && !error.message) {
      return fields || String(error);
    }
    const text = `${error.name || 'Error'}: ${error.message || String(error)}`;
    return fields && fields !== '{}' ? `${text} ${fields}` : text;
  };
  const nameOf = (member) => (member && member.user && member.user.name) || null;

  const sbt = {
    application: null,
    conversation: null,
    invitedConversationId: null,
    // {scope, type, member, member_id, remote, at}: `scope` is application, conversation or
    // member; `member` is the user name of the Member object the event is about.
    events: [],
    errors: [],
  };
  window.sbt = sbt;
  sbt.describe = describe;

  // The SDK logs every message it sends and receives in debug mode; the last lines go into
  // failure messages.
  sbt.console = [];
  for (const level of ['debug', 'log', 'info', 'warn', 'error']) {
    const original = console[level].bind(console);
    console[level] = (...values) => {
      const line = values
        .map((value) => (typeof value === 'string' ? value : describe(value)))
        .join(' ');
      sbt.console.push(`${level}: ${line.slice(0, 600)}`);
      if (sbt.console.length > 400) {
        sbt.console.shift();
      }
      original(...values);
    };
  }

  window.addEventListener('error', (event) => {
    sbt.errors.push(`error: ${event.message}`);
  });
  window.addEventListener('unhandledrejection', (event) => {
    sbt.errors.push(`unhandled rejection: ${describe(event.reason)}`);
  });

  sbt.waitFor = async (label, check, timeoutMs) => {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const value = await check();
      if (value) {
        return value;
      }
      if (performance.now() > deadline) {
        throw new Error(`timed out after ${timeoutMs} ms waiting for ${label}`);
      }
      await sleep(50);
    }
  };

  sbt.record = (scope, type, member, extra) => {
    sbt.events.push({
      scope,
      type,
      member: nameOf(member),
      member_id: (member && member.id) || null,
      at: performance.now(),
      ...extra,
    });
  };

  // The first matching event, or undefined; `remote` is checked only when given.
  sbt.find = (scope, type, member, remote) =>
    sbt.events.find(
      (event) =>
        event.scope === scope &&
        event.type === type &&
        event.member === member &&
        (remote === undefined || event.remote === remote),
    );

  sbt.waitForEvent = (scope, type, member, timeoutMs, remote) =>
    sbt.waitFor(
      `${scope} event ${type} about ${member}`,
      () => sbt.find(scope, type, member, remote),
      timeoutMs,
    );

  sbt.login = async (origin, token) => {
    const client = new ConversationClient({
      url: origin,
      path: '/rtc',
      debug: true,
      iceServers: [],
      cache: false,
      sync: 'none',
      socket_io: {
        transports: ['websocket'],
        reconnection: false,
        forceNew: true,
        autoConnect: true,
      },
    });
    // login() waits for its reply without a timeout, so a socket that cannot connect rejects
    // in its place.
    const connectFailed = new Promise((_, reject) => {
      client.connection.on('connect_error', (error) => {
        reject(new Error(`socket.io could not connect to ${origin}/rtc: ${describe(error)}`));
      });
    });
    sbt.application = await Promise.race([client.login(token), connectFailed]);
    sbt.application.on('member:invited', (member, event) => {
      sbt.invitedConversationId = event.cid || (event.conversation && event.conversation.id);
      sbt.record('application', 'member:invited', member, { cid: sbt.invitedConversationId });
    });
    return { id: sbt.application.me.id, name: sbt.application.me.name };
  };

  const videos = () => {
    let container = document.getElementById('sbt-videos');
    if (!container) {
      container = document.createElement('div');
      container.id = 'sbt-videos';
      document.body.appendChild(container);
    }
    return container;
  };

  const onMemberMedia = (member, type, payload) => {
    const remote = Boolean(payload && payload.remote_member_id);
    sbt.record('member', type, member, {
      remote,
      stream_index: payload && payload.streamIndex,
    });
    if (!remote) {
      return;
    }
    const selector = `video[data-member-id="${member.id}"]`;
    if (type === 'media:stream:on' && payload.stream) {
      let video = videos().querySelector(selector);
      if (!video) {
        video = document.createElement('video');
        video.dataset.memberId = member.id;
        video.dataset.member = nameOf(member);
        video.muted = true;
        video.autoplay = true;
        video.playsInline = true;
        video.width = 160;
        video.height = 120;
        videos().appendChild(video);
      }
      video.srcObject = payload.stream;
      video.play().catch((error) => sbt.errors.push(`video.play: ${describe(error)}`));
    } else if (type === 'media:stream:off') {
      const video = videos().querySelector(selector);
      if (video) {
        video.remove();
      }
    }
  };

  const watchedMembers = new WeakSet();
  const watchMember = (member) => {
    if (!member || watchedMembers.has(member)) {
      return;
    }
    watchedMembers.add(member);
    for (const type of ['media:stream:on', 'media:stream:off', 'media:connection:fail']) {
      member.on(type, (payload) => onMemberMedia(member, type, payload));
    }
  };

  // Records the conversation's events and the media events of each of its Member objects. The
  // SDK creates Member objects in many places (conversation:get, events, join, invite) and may
  // emit `media:stream:on` in the same task, so every insertion into `members` is watched.
  sbt.watch = (conversation) => {
    sbt.conversation = conversation;
    const types = [
      'member:joined',
      'member:invited',
      'member:left',
      'member:media',
      'audio:mute:on',
      'audio:mute:off',
      'video:mute:on',
      'video:mute:off',
    ];
    for (const type of types) {
      conversation.on(type, (member, event) => {
        watchMember(member);
        sbt.record('conversation', type, member, { from: event && event.from });
      });
    }
    const set = conversation.members.set;
    conversation.members.set = function (key, member) {
      watchMember(member);
      return set.call(this, key, member);
    };
    conversation.members.forEach(watchMember);
    return conversation.id;
  };

  // The newest Member object of the user with this name.
  sbt.member = (name) => {
    let found = null;
    for (const member of sbt.conversation.members.values()) {
      if (nameOf(member) === name) {
        found = member;
      }
    }
    if (!found) {
      throw new Error(`no member of user ${name} in conversation ${sbt.conversation.id}`);
    }
    return found;
  };

  // Sums the inbound RTP statistics of the receive peer connections that carry the streams of
  // the named user's member.
  sbt.inbound = async (name) => {
    const member = sbt.member(name);
    const legs = (sbt.conversation.remoteMembers || []).filter(
      (leg) => leg.remote_member_id === member.id && leg.pc && leg.pc.connectionState !== 'closed',
    );
    const totals = {
      legs: legs.length,
      frames_decoded: 0,
      video_packets: 0,
      audio_packets: 0,
      audio_samples: 0,
    };
    for (const leg of legs) {
      const report = await leg.pc.getStats();
      report.forEach((stats) => {
        if (stats.type !== 'inbound-rtp') {
          return;
        }
        if (stats.kind === 'video') {
          totals.frames_decoded += stats.framesDecoded || 0;
          totals.video_packets += stats.packetsReceived || 0;
        } else if (stats.kind === 'audio') {
          totals.audio_packets += stats.packetsReceived || 0;
          totals.audio_samples += stats.totalSamplesReceived || 0;
        }
      });
    }
    return totals;
  };

  // Video statistics of this page's own upstream legs and of every receive leg, for the test's
  // output: they show frame rates, resolution and why an encoder limits its quality.
  sbt.videoReport = async () => {
    const pick = (stats, keys) => Object.fromEntries(keys.map((key) => [key, stats[key]]));
    const report = { upstream: [], downstream: {} };
    for (const leg of Object.values(sbt.conversation.media.rtcObjects || {})) {
      if (!leg.pc || leg.pc.connectionState === 'closed') {
        continue;
      }
      (await leg.pc.getStats()).forEach((stats) => {
        if (stats.type === 'outbound-rtp' && stats.kind === 'video') {
          report.upstream.push(pick(stats, ['framesEncoded', 'framesSent', 'framesPerSecond',
            'frameWidth', 'frameHeight', 'qualityLimitationReason', 'pliCount', 'nackCount',
            'keyFramesEncoded', 'targetBitrate']));
        }
      });
    }
    for (const leg of sbt.conversation.remoteMembers || []) {
      if (!leg.pc || leg.pc.connectionState === 'closed') {
        continue;
      }
      const name = nameOf(leg.remote_member) || leg.remote_member_id;
      (await leg.pc.getStats()).forEach((stats) => {
        if (stats.type === 'inbound-rtp' && stats.kind === 'video') {
          report.downstream[name] = pick(stats, ['framesReceived', 'framesDecoded',
            'framesDropped', 'framesPerSecond', 'frameWidth', 'frameHeight', 'keyFramesDecoded',
            'packetsLost', 'nackCount', 'pliCount', 'firCount', 'decoderImplementation']);
        }
      });
    }
    return report;
  };

  // Waits until the named user's decoded video frames grow past their current count.
  sbt.framesGrow = async (name, timeoutMs) => {
    const before = await sbt.inbound(name);
    const after = await sbt.waitFor(
      `decoded video frames of ${name} to grow past ${before.frames_decoded}`,
      async () => {
        const now = await sbt.inbound(name);
        return now.frames_decoded > before.frames_decoded ? now : null;
      },
      timeoutMs,
    );
    return { before, after };
  };

  // The <video> elements this page made for remote streams, with their size and play state.
  sbt.videoElements = () =>
    Array.from(videos().querySelectorAll('video')).map((video) => ({
      member: video.dataset.member,
      width: video.videoWidth,
      height: video.videoHeight,
      ready_state: video.readyState,
      paused: video.paused,
    }));

  sbt.sleep = sleep;
})();
