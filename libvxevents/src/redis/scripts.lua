-- The Redis backplane's Lua scripts (cluster.c runs them with EVALSHA). Embedded at build
-- time: CMake (redis/embed_lua.cmake) turns every "--@ NAME" section into the C string
-- VX_LUA_NAME of scripts_lua.h; sections are concatenated in C where one uses another.
-- Key names are those of keys.h; the payloads they PUBLISH are the envelope of keys.h
-- ({"o":<origin>,"x":<except>,"e":<event>,"d":<data>}), with origin "" so that every
-- instance delivers them, the one that ran the script included.

--@ REAP_FN
-- Instances whose counts or presence entries must go (reaped, or leaving at shutdown).
-- <prefix>:ich:<id> lists the channels where instance <id> has a count, so this touches
-- only its own keys. Shared by the heartbeat and the leave scripts.
local function reap(p, id)
  for _, ch in ipairs(redis.call('SMEMBERS', p .. ':ich:' .. id)) do
    local k = p .. ':count:' .. ch
    redis.call('HDEL', k, id)
    if redis.call('HLEN', k) == 0 then redis.call('SREM', p .. ':channels', ch) end
  end
  redis.call('DEL', p .. ':ich:' .. id)
  for _, e in ipairs(redis.call('SMEMBERS', p .. ':ipres:' .. id)) do
    local nl = string.find(e, '\n', 1, true)
    if nl then
      local ch = string.sub(e, 1, nl - 1)
      local mid = string.sub(e, nl + 1)
      local pm = p .. ':pm:' .. ch .. ':' .. mid
      redis.call('SREM', pm, id)
      if redis.call('SCARD', pm) == 0 then
        local pi = p .. ':pinfo:' .. ch
        local j = redis.call('HGET', pi, mid)
        if j then
          redis.call('HDEL', pi, mid)
          redis.call('PUBLISH', p .. ':ch:' .. ch,
                     '{"o":"","x":null,"e":"member_removed","d":' .. j .. '}')
        end
      end
    end
  end
  redis.call('DEL', p .. ':ipres:' .. id)
  redis.call('HDEL', p .. ':seen', id)
end

--@ ADD
-- Cluster-wide subscriber counts: <prefix>:count:<channel> is a hash of instance id ->
-- local subscribers, <prefix>:channels the set of channels with any, <prefix>:ich:<id> the
-- channels of one instance. KEYS: count, channels, ich; ARGV: id, n, channel.
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
if n <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1]) redis.call('SREM', KEYS[3], ARGV[3])
else
  redis.call('SADD', KEYS[3], ARGV[3])
end
if redis.call('HLEN', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[2], ARGV[3])
else
  redis.call('SADD', KEYS[2], ARGV[3])
end
return n

--@ SET
-- The absolute value, when (re-)registering. Same KEYS and ARGV as ADD.
if tonumber(ARGV[2]) > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('SADD', KEYS[2], ARGV[3]) redis.call('SADD', KEYS[3], ARGV[3])
else
  redis.call('HDEL', KEYS[1], ARGV[1]) redis.call('SREM', KEYS[3], ARGV[3])
  if redis.call('HLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[3]) end
end
return 1

--@ SUM
local t = 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do t = t + tonumber(v) end
return t

--@ BEAT
-- The heartbeat (REAP_FN before it). ARGV: prefix, id, window, gap (ms), reaped TTL (ms).
-- <prefix>:seen maps instance id -> Redis time of its last beat, <prefix>:beat is the last
-- beat of anyone, <prefix>:grace the time before which nobody is reaped (set after a
-- stall), <prefix>:reaped:<id> marks a reaped instance for a while. Returns {status,
-- instances reaped now}: status "ok" (known), "reaped" (this instance was reaped: register
-- again, with events) or "new" (not known: first beat, or Redis lost its data; register
-- quietly).
-- Redis 3.2-4 allow writes after TIME only with effects replication (the default since 5).
if redis.replicate_commands then redis.replicate_commands() end
local p, me = ARGV[1], ARGV[2]
local window, gap = tonumber(ARGV[3]), tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = tonumber(redis.call('GET', p .. ':beat') or '0')
if last > 0 and now - last > gap then
  redis.call('SET', p .. ':grace', string.format('%d', now + window), 'PX', window)
end
redis.call('SET', p .. ':beat', string.format('%d', now))
local status = 'ok'
if not redis.call('HGET', p .. ':seen', me) then
  if redis.call('DEL', p .. ':reaped:' .. me) == 1 then status = 'reaped' else status = 'new' end
end
redis.call('HSET', p .. ':seen', me, string.format('%d', now))
local gone = 0
if now >= tonumber(redis.call('GET', p .. ':grace') or '0') then
  local s = redis.call('HGETALL', p .. ':seen')
  for i = 1, #s, 2 do
    if now - tonumber(s[i + 1]) > window then
      reap(p, s[i])
      redis.call('SET', p .. ':reaped:' .. s[i], '1', 'PX', ARGV[5])
      gone = gone + 1
    end
  end
end
return {status, gone}

--@ LEAVE_ALL
-- Leaving at shutdown (REAP_FN before it): the same clean-up as a reap, at once.
-- ARGV: prefix, id.
reap(ARGV[1], ARGV[2])
return 1

--@ JOIN
-- Presence: <prefix>:pm:<channel>:<id> is the set of instances where member <id> has a
-- connection, <prefix>:pinfo:<channel> maps id -> member JSON, <prefix>:ipres:<instance>
-- lists "<channel>\n<id>" for reaping. member_added / member_removed are PUBLISHed here:
-- exactly once per cluster-wide join or leave, atomically with the bookkeeping.
-- KEYS: pm, pinfo, ipres, channel key; ARGV: instance, member id, member JSON, ipres entry,
-- except (JSON), quiet ("1": register without member_added).
redis.call('SADD', KEYS[1], ARGV[1]) redis.call('SADD', KEYS[3], ARGV[4])
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 0 then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
  if ARGV[6] == '0' then
    redis.call('PUBLISH', KEYS[4],
               '{"o":"","x":' .. ARGV[5] .. ',"e":"member_added","d":' .. ARGV[3] .. '}')
  end
end
return redis.call('HVALS', KEYS[2])

--@ LEAVE
-- Same KEYS and ARGV as JOIN.
redis.call('SREM', KEYS[1], ARGV[1]) redis.call('SREM', KEYS[3], ARGV[4])
if redis.call('SCARD', KEYS[1]) == 0 then
  local j = redis.call('HGET', KEYS[2], ARGV[2])
  if j then
    redis.call('HDEL', KEYS[2], ARGV[2])
    redis.call('PUBLISH', KEYS[4], '{"o":"","x":null,"e":"member_removed","d":' .. j .. '}')
  end
end
return 1

--@ PUB
-- A broadcast to one channel (DESIGN §12): the channel's next offset, the cluster's next
-- seq (the SSE id), the append to the channel's stream and the PUBLISH, atomically, so every
-- instance sees the same offsets in the same order. <prefix>:st:<channel> holds the stream's
-- position (e epoch, o last offset, c the seq when it was created, g the seq of its last
-- entry); <prefix>:sx:<channel> the entries (ID "<offset>-1", fields t = Redis time in ms,
-- m = the message); <prefix>:seq the cluster's seq and <prefix>:epoch its epoch (both new
-- after a flush); <prefix>:pubseq the last local sequence number of each publishing
-- instance that ran, so that a broadcast sent again after a lost reply is not appended twice.
-- KEYS: st, sx, ch, seq, epoch, pubseq; ARGV: origin, local seq, a fresh epoch (used when
-- the channel or the cluster has none), maxlen (0: no stream), stream TTL ms, the message
-- (its closing brace is replaced by the stream fields), st TTL ms.
-- Returns {offset, seq, epoch, cluster epoch}, or {0} for a resend Redis had already run.
if redis.replicate_commands then redis.replicate_commands() end
local last = tonumber(redis.call('HGET', KEYS[6], ARGV[1]) or '0')
if tonumber(ARGV[2]) <= last then return {0} end
redis.call('HSET', KEYS[6], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[6], 86400000)
local ge = redis.call('GET', KEYS[5])
if not ge then ge = ARGV[3] redis.call('SET', KEYS[5], ge) end
local g = redis.call('INCR', KEYS[4])
local e = redis.call('HGET', KEYS[1], 'e')
if not e then
  e = ARGV[3]
  redis.call('HSET', KEYS[1], 'e', e, 'o', 0, 'c', g - 1)
end
local o = redis.call('HINCRBY', KEYS[1], 'o', 1)
redis.call('HSET', KEYS[1], 'g', g)
redis.call('PEXPIRE', KEYS[1], ARGV[7])
local msg = string.sub(ARGV[6], 1, -2) .. string.format(',"f":%d,"g":%d,"p":"%s","q":"%s"}', o, g, e, ge)
if tonumber(ARGV[4]) > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], string.format('%d-1', o), 't', now, 'm', msg)
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
redis.call('PUBLISH', KEYS[3], msg)
return {o, g, e, ge}

--@ HIST
-- A channel stream's position and entries from offset ARGV[1] on (at most ARGV[2], none
-- older than ARGV[3] ms), creating the position when the channel has none (a fresh epoch,
-- ARGV[4]) so that a subscriber's ack and later broadcasts agree on the epoch. KEYS: st,
-- sx, epoch, seq; ARGV[5]: st TTL ms. Returns {epoch, last offset, created seq, last seq,
-- cluster epoch, offset1, message1, offset2, message2, ...}.
if redis.replicate_commands then redis.replicate_commands() end
local ge = redis.call('GET', KEYS[3])
if not ge then ge = ARGV[4] redis.call('SET', KEYS[3], ge) end
local m = redis.call('HMGET', KEYS[1], 'e', 'o', 'c', 'g')
local e, o, c, g = m[1], m[2] or '0', m[3] or '0', m[4] or '0'
if not e then
  e = ARGV[4]
  c = redis.call('GET', KEYS[4]) or '0'
  redis.call('HSET', KEYS[1], 'e', e, 'o', 0, 'c', c, 'g', 0)
  o, g = '0', '0'
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
local out = {e, o, c, g, ge}
if tonumber(ARGV[2]) > 0 then
  local t = redis.call('TIME')
  local oldest = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[3])
  local r = redis.call('XRANGE', KEYS[2], ARGV[1] .. '-0', '+', 'COUNT', ARGV[2])
  for _, x in ipairs(r) do
    local f = x[2]
    local tt, mm
    for i = 1, #f, 2 do
      if f[i] == 't' then tt = tonumber(f[i + 1]) elseif f[i] == 'm' then mm = f[i + 1] end
    end
    if mm and tt and tt >= oldest then
      out[#out + 1] = string.match(x[1], '^(%d+)')
      out[#out + 1] = mm
    end
  end
end
return out
