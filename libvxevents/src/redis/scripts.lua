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
