-- Appends one entry to the cluster's log, atomically: an ingest (its changes detected
-- against the shared state) or a scrape-progress step. Every entry's id is `TOP-SEQ`, TOP
-- being the log's offset after it: an ingest takes one offset per changed snapshot (a
-- refresh-only ingest none), a step takes one. Each entry names the one before it (`p`),
-- so a follower can tell that it missed some.
--
-- KEYS: meta hash, log stream, then the source's state hash (odds) or the scrape lease
--       (progress), the events' details hash, when each snapshot and details were last
--       written (a sorted set, for the state's age bound), the ingest's idempotency key, and
--       when each event was last written (a sorted set, for the state's count bound)
-- ARGV: kind (odds|progress|cut), deadline (Unix ms), epoch if none, the log's max entries,
--       max age (ms) and max bytes, the state's max age (ms) and max events, the sources
--       (comma-separated), how long the idempotency key is kept (ms; empty: no key), the
--       limits those came from as the node's flags (`--history-size=N ...`), the coalescing
--       window (us: the node's, longer while its subscribers fall behind; 0: every entry
--       closes its group), then,
--       for odds, the source and the snapshots, each
--       `EVENT MS M0 M1 TAIL` or, for an event's details, `e EVENT JSON`
--       (MS: captured_at in ms since the year 0; TAIL: the snapshot's JSON after its id;
--       M0..M1: where its markets lie in TAIL, from 0), or, for progress, the step's JSON,
--       its mark (open: a run's first step, close: its last, orphan: the last, written for a
--       run whose lease expired, or nothing) and its run id, or, for a cut, the last entry id
--       the caller read.
--
-- Entries come in groups that every member publishes alike (one message per topic and
-- source: `crate::dispatcher`). An entry with `x` closes its group. As the dispatcher's
-- pacing does on a single node, a token bucket (4 at once, then one per window, by Redis's
-- clock) lets a quiet cluster's entries close at once and groups a flood's; steps always
-- close. A group left open is closed by a cut: an entry of no offset that a follower
-- appends once nothing new came for a window, unless something came meanwhile.
local meta, log, state, lease, events, touched = KEYS[1], KEYS[2], KEYS[3], KEYS[3], KEYS[4], KEYS[5]
local idempotency, recent = KEYS[6], KEYS[7]
local kind, deadline, new_epoch = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local log_entries, log_age, log_bytes = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local state_age, max_events, sources = tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9]
local kept_for, limits, window = ARGV[10], ARGV[11], tonumber(ARGV[12])
-- Where the kind's own arguments start.
local rest = 13
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
-- A caller that gave up (and answered 503) must never see its request applied later. The
-- deadline leaves room for the work this call carries, so a script that starts finishes
-- before the caller gives up.
if now > deadline then
  return redis.error_reply('EXPIRED the request reached Redis too late to finish in time')
end
-- The limits trim what every member reads: the first node's stand, and a node with others
-- (one that joined after Redis lost them, before the others came back) writes nothing.
local held_limits = redis.call('HGET', meta, 'limits')
if not held_limits then
  redis.call('HSET', meta, 'limits', limits)
elseif held_limits ~= limits then
  return redis.error_reply('LIMITS this node has ' .. limits .. ', the cluster ' .. held_limits)
end
-- A repeat of an ingest answers what the first one did, and applies nothing.
if kept_for ~= '' then
  local first = redis.call('GET', idempotency)
  if first then
    local accepted, stale, changed = string.match(first, '^(%d+) (%d+) (%d+)$')
    return {redis.call('HGET', meta, 'epoch') or '', '', tonumber(accepted), tonumber(stale), tonumber(changed), 1}
  end
end
local held_meta = redis.call('HMGET', meta, 'epoch', 'top', 'sid', 'last', 'open')
local epoch = held_meta[1]
if not epoch then
  epoch = new_epoch
  redis.call('HSET', meta, 'epoch', epoch)
end
local top = tonumber(held_meta[2] or '0')
local fields = nil
local accepted, stale, changed = 0, 0, 0

if kind == 'cut' then
  if held_meta[4] ~= ARGV[rest] or held_meta[5] ~= '1' then
    return {epoch, '', 0, 0, 0, 0}
  end
  fields = {'k', 'cut'}
elseif kind == 'progress' then
  -- The open run is kept in `meta` from its first step to its last, so that a run whose
  -- node died (its lease, KEYS[3], expired) can be ended `failed` by one other node.
  local mark, run = ARGV[rest + 1], ARGV[rest + 2]
  if mark == 'orphan' and (redis.call('HGET', meta, 'run') ~= run or redis.call('EXISTS', lease) == 1) then
    return {epoch, '', 0, 0, 0, 0}
  end
  if mark == 'open' then
    redis.call('HSET', meta, 'run', run)
  elseif mark ~= '' then
    redis.call('HDEL', meta, 'run')
  end
  changed = 1
  fields = {'k', 'progress', 'j', ARGV[rest]}
else
  local sid = tonumber(held_meta[3] or '0')
  -- The snapshots are applied in order, as a single node's cache applies a batch, but the
  -- entry names each event once (its last applied snapshot, where it first appeared), and
  -- counts it changed once, so that followers and the reply see what a single node would.
  local lines, line_of, changed_here = {}, {}, {}
  -- The latest applied details of each event, in order of first appearance.
  local details, details_order = {}, {}
  -- Whether the snapshot before an event's details was applied: a stale one's are not.
  local applied = false
  -- One snapshot: a change (`c`, a new snapshot id), a refresh (`r`, the same odds read
  -- again: the id kept) or stale (older than the one held: nothing).
  local function snapshot(item)
    local id, ms, m0, m1, at = string.match(item, '^(%d+) (%d+) (%d+) (%d+) ()')
    local tail = string.sub(item, at)
    local held = redis.call('HGET', state, id)
    local kind, this = 'c', nil
    if held then
      local hid, hms, h0, h1, hat = string.match(held, '^(%d+) (%d+) (%d+) (%d+) ()')
      if tonumber(ms) < tonumber(hms) then
        stale = stale + 1
        applied = false
        return
      end
      if string.sub(held, hat + h0, hat + h1 - 1) == string.sub(tail, m0 + 1, m1) then
        kind, this = 'r', hid
      end
    end
    if kind == 'c' then
      sid = sid + 1
      this = string.format('%d', sid)
      if not changed_here[id] then
        changed_here[id] = true
        changed = changed + 1
      end
    end
    local value = this .. ' ' .. ms .. ' ' .. m0 .. ' ' .. m1 .. ' ' .. tail
    redis.call('HSET', state, id, value)
    redis.call('ZADD', touched, now, ARGV[rest] .. ' ' .. id, now, '* ' .. id)
    redis.call('ZADD', recent, now, id)
    local line = (changed_here[id] and 'c' or 'r') .. ' ' .. id .. ' ' .. value
    if line_of[id] then
      lines[line_of[id]] = line
    else
      lines[#lines + 1] = line
      line_of[id] = #lines
    end
    accepted = accepted + 1
    applied = true
  end
  for i = rest + 1, #ARGV do
    local item = ARGV[i]
    if string.sub(item, 1, 2) == 'e ' then
      -- An event's details, `e EVENT JSON`, right after its snapshot: the latest given with
      -- an applied snapshot win, kept as `SOURCE JSON` (whose they are decides whose
      -- kickoff is trusted); logged for the followers.
      if applied then
        local id, json = string.match(item, '^e (%d+) (.*)$')
        redis.call('HSET', events, id, ARGV[rest] .. ' ' .. json)
        if not details[id] then
          details_order[#details_order + 1] = id
        end
        details[id] = item
      end
    else
      snapshot(item)
    end
  end
  for _, id in ipairs(details_order) do
    lines[#lines + 1] = details[id]
  end
  if changed > 0 then
    redis.call('HSET', meta, 'sid', string.format('%d', sid))
  end
  -- The state's bound, as each node's cache has it (--event-ttl): a few snapshots (`SOURCE
  -- EVENT`) and details (`* EVENT`) not updated for that long leave per append.
  local prefix = string.match(state, '^(.*:)')
  local stale_before = now - state_age
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', touched, '-inf', stale_before, 'LIMIT', 0, 32)) do
    local source, id = string.match(member, '^(%S+) (%d+)$')
    if source == '*' then
      redis.call('HDEL', events, id)
    elseif source then
      redis.call('HDEL', prefix .. source, id)
    end
    redis.call('ZREM', touched, member)
  end
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', recent, '-inf', stale_before, 'LIMIT', 0, 32)) do
    redis.call('ZREM', recent, id)
  end
  -- The count bound, as each node's cache has it (--max-events): the events written
  -- longest ago leave, every source's snapshot and the details, a few per append.
  local excess = redis.call('ZCARD', recent) - max_events
  if excess > 0 then
    for _, id in ipairs(redis.call('ZRANGE', recent, 0, math.min(excess, 64) - 1)) do
      for source in string.gmatch(sources, '[^,]+') do
        redis.call('HDEL', prefix .. source, id)
        redis.call('ZREM', touched, source .. ' ' .. id)
      end
      redis.call('HDEL', events, id)
      redis.call('ZREM', touched, '* ' .. id)
      redis.call('ZREM', recent, id)
    end
  end
  if #lines > 0 then
    fields = {'k', 'odds', 's', ARGV[rest], 'd', table.concat(lines, '\n')}
  end
end

local entry = ''
if fields then
  top = top + changed
  local closes = kind ~= 'odds' or window == 0
  if not closes then
    local us = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
    local bucket = redis.call('HMGET', meta, 'tokens', 'tokens_at')
    local tokens = tonumber(bucket[1] or '4')
    tokens = math.min(4, tokens + math.max(0, us - tonumber(bucket[2] or us)) / window)
    closes = tokens >= 1
    if closes then
      tokens = tokens - 1
    end
    redis.call('HSET', meta, 'tokens', string.format('%.6f', tokens), 'tokens_at', string.format('%d', us))
  end
  if closes then
    fields[#fields + 1] = 'x'
    fields[#fields + 1] = '1'
  end
  local size = 0
  for _, field in ipairs(fields) do
    size = size + #field
  end
  -- `t` and `b` stay the 4th and 6th values: the trimming below reads them there.
  entry = redis.call('XADD', log, string.format('%d-*', top),
    'p', held_meta[4] or '0-0', 't', now, 'b', size, unpack(fields))
  local held = redis.call('HINCRBY', meta, 'bytes', size)
  redis.call('HSET', meta, 'top', string.format('%d', top), 'last', entry, 'open', closes and '0' or '1')
  -- The bounds of the log (entries, age, bytes): a few of the oldest entries leave per
  -- append, so no call takes long and the log converges to its bounds.
  local cutoff = now - log_age
  for _ = 1, 16 do
    local oldest = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)[1]
    if not oldest or oldest[1] == entry then
      break
    end
    local over = redis.call('XLEN', log) > log_entries or held > log_bytes
      or tonumber(oldest[2][4]) < cutoff
    if not over then
      break
    end
    redis.call('XDEL', log, oldest[1])
    held = redis.call('HINCRBY', meta, 'bytes', -(tonumber(oldest[2][6]) or 0))
  end
end
if kept_for ~= '' then
  redis.call('SET', idempotency, accepted .. ' ' .. stale .. ' ' .. changed, 'PX', kept_for)
end
return {epoch, entry, accepted, stale, changed, 0}
