"""The Lua scripts of the Redis backend: each read-decide-write step is one script.

Redis runs a script atomically, so a claim or a budget reservation cannot interleave with
another instance's. The scripts are idempotent for a given token, so the client's retry after
a lost reply cannot take a second budget unit or turn our own marker into someone else's.
"""

from handler.store.base import REFAILURES_KEPT

REDIS_EXPIRY_GRACE_MS = 60_000  # Redis drops a key this long after its logical expiry

# Every script that takes something (a marker, a budget unit) first compares Redis' own clock
# with the caller's deadline, in Redis time (the last ARGV): a script that a stalled server runs
# only after the caller gave up must not take anything the caller will never use or release.
LATE = "late"
DEADLINE_LUA = """
local clock = redis.call('TIME')
if tonumber(clock[1]) + tonumber(clock[2]) / 1000000 > tonumber(ARGV[#ARGV]) then
  return {'late', ''}
end
"""

# KEYS[1] marker hash; ARGV: now, token, expires_at, redis_ttl_ms, deadline
CLAIM_LUA = (
    DEADLINE_LUA
    + """
local cur = redis.call('HMGET', KEYS[1], 'state', 'token', 'expires_at', 'record')
if cur[1] and tonumber(cur[3]) > tonumber(ARGV[1]) then
  if cur[1] == 'done' then return {'done', cur[4] or ''} end
  if cur[2] == ARGV[2] then return {'acquired', ''} end
  return {'in_progress', ''}
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'state', 'in_progress', 'token', ARGV[2],
           'expires_at', ARGV[3], 'updated_at', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {'acquired', ''}
"""
)

# KEYS[1] marker hash, KEYS[2] deferred index, KEYS[3] deferred failures; ARGV: now, token,
# expires_at, record, redis_ttl_ms, key. A final outcome also forgets the deferred failure.
FINISH_LUA = """
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'state', 'done', 'token', ARGV[2], 'expires_at', ARGV[3],
           'record', ARGV[4], 'updated_at', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('ZREM', KEYS[2], ARGV[6])
redis.call('HDEL', KEYS[3], ARGV[6])
return 1
"""

# KEYS[1] marker hash; ARGV: token
RELEASE_LUA = """
local cur = redis.call('HMGET', KEYS[1], 'state', 'token')
if cur[1] == 'in_progress' and cur[2] == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS[1] marker hash; ARGV: now, token, expires_at, redis_ttl_ms. Answers 1 when the live
# marker is the token's and now expires later, 0 when it is someone else's, expired or gone.
RENEW_LUA = """
local cur = redis.call('HMGET', KEYS[1], 'state', 'token', 'expires_at')
if cur[1] == 'in_progress' and cur[2] == ARGV[2] and tonumber(cur[3]) > tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'expires_at', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return 1
end
return 0
"""

# KEYS[1] marker hash; ARGV: now. Answers 1 when a live entry was dropped.
FORGET_LUA = """
local expires_at = redis.call('HGET', KEYS[1], 'expires_at')
redis.call('DEL', KEYS[1])
if expires_at and tonumber(expires_at) > tonumber(ARGV[1]) then return 1 end
return 0
"""

# KEYS[1] budget sorted set. Answers how many reservations it held.
RESET_BUDGET_LUA = """
local held = redis.call('ZCARD', KEYS[1])
redis.call('DEL', KEYS[1])
return held
"""

# KEYS[1] a probe key nobody else uses. A replica, a full maxmemory or min-replicas-to-write
# refuse the SET; PX collects the key should the DEL never run.
CHECK_WRITABLE_LUA = """
redis.call('SET', KEYS[1], '1', 'PX', 10000)
redis.call('DEL', KEYS[1])
return 1
"""

# A budget is a sorted set scored by when each reservation was made; a member is
# "<token>:<expires_at>" once settled and "<token>:<expires_at>:<in_flight_until>" while its
# restore is in flight: the reservation's token, when it may be forgotten (the longer of its
# window and the caller's keep) and until when it counts as in flight. A member without a
# colon (an earlier version wrote the bare token) is settled, and kept for as long as the
# caller keeps its own.
BUDGET_MEMBER_LUA = """
local function member_fields(member)
  local fields = {}
  for field in string.gmatch(member, '[^:]+') do fields[#fields + 1] = field end
  return fields
end
"""

# KEYS[1] budget sorted set; ARGV: now, window_start, limit, token, member, kept_seconds,
# redis_ttl_ms, deadline. Answers {token} when reserved; {'spent'} when spent reservations
# fill the budget, {'busy'} when in-flight ones fill the rest. Only reservations past their own
# expiry are dropped: another caller's window is not ours.
RESERVE_LUA = (
    DEADLINE_LUA
    + BUDGET_MEMBER_LUA
    + """
local now, since = tonumber(ARGV[1]), tonumber(ARGV[2])
local held = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local used, spent = 0, 0
for i = 1, #held, 2 do
  local fields = member_fields(held[i])
  if fields[1] == ARGV[4] then return {ARGV[4]} end  -- our retry after a lost reply
  local at = tonumber(held[i + 1])
  local expires_at = tonumber(fields[2]) or at + tonumber(ARGV[6])
  if expires_at <= now then
    redis.call('ZREM', KEYS[1], held[i])
  elseif at > since then
    used = used + 1
    if not fields[3] or tonumber(fields[3]) <= now then spent = spent + 1 end
  end
end
local limit = tonumber(ARGV[3])
if used >= limit then
  if spent >= limit then return {'spent'} end
  return {'busy'}
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[5])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[7]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[7])
end
return {ARGV[4]}
"""
)

# KEYS[1] budget sorted set; ARGV: token. The in-flight member becomes a settled one, at the
# same time; answers 1 when it was in flight.
SETTLE_LUA = (
    BUDGET_MEMBER_LUA
    + """
local held = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #held, 2 do
  local fields = member_fields(held[i])
  if fields[1] == ARGV[1] then
    if not fields[3] then return 0 end
    redis.call('ZREM', KEYS[1], held[i])
    redis.call('ZADD', KEYS[1], held[i + 1], fields[1] .. ':' .. fields[2])
    return 1
  end
end
return 0
"""
)

# KEYS[1] budget sorted set; ARGV: token. Removes that reservation, whatever its member says.
REFUND_LUA = (
    BUDGET_MEMBER_LUA
    + """
local held = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, member in ipairs(held) do
  if member_fields(member)[1] == ARGV[1] then return redis.call('ZREM', KEYS[1], member) end
end
return 0
"""
)

# KEYS[1] a failure's sighting hash; ARGV: now, expires_at, after (or ''), redis_ttl_ms.
# Answers when the failure was first seen. A retry after a lost reply finds its own sighting.
FIRST_SEEN_LUA = """
local cur = redis.call('HMGET', KEYS[1], 'at', 'expires_at')
if cur[1] and tonumber(cur[2]) > tonumber(ARGV[1])
    and (ARGV[3] == '' or tonumber(cur[1]) > tonumber(ARGV[3])) then
  return cur[1]
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'at', ARGV[1], 'expires_at', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return ARGV[1]
"""

# Deferred failures: an index (sorted set: item key scored by due time) and a hash (item key ->
# "<expires_at>|<failure JSON>"). At most DEFERRED_SCAN of the longest-due entries are looked at
# per call, and expired ones among them are dropped on the way.
DEFERRED_SCAN = 200

# KEYS[1] index, KEYS[2] failures; ARGV: key, due_at, value, now, redis_ttl_ms.
REMEMBER_DEFERRED_LUA = f"""
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
local now = tonumber(ARGV[4])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[4], 'LIMIT', 0, {DEFERRED_SCAN})
for _, key in ipairs(due) do
  local value = redis.call('HGET', KEYS[2], key)
  if not value or tonumber(string.match(value, '^[^|]+')) <= now then
    redis.call('ZREM', KEYS[1], key)
    redis.call('HDEL', KEYS[2], key)
  end
end
for i = 1, 2 do
  if redis.call('PTTL', KEYS[i]) < tonumber(ARGV[5]) then
    redis.call('PEXPIRE', KEYS[i], ARGV[5])
  end
end
return 1
"""

# KEYS[1] index, KEYS[2] failures; ARGV: now, limit. Answers {key, value, key, value, ...}.
DUE_DEFERRED_LUA = f"""
local now, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local found = {{}}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, {DEFERRED_SCAN})
for _, key in ipairs(due) do
  if #found >= 2 * limit then break end
  local value = redis.call('HGET', KEYS[2], key)
  if not value or tonumber(string.match(value, '^[^|]+')) <= now then
    redis.call('ZREM', KEYS[1], key)
    redis.call('HDEL', KEYS[2], key)
  else
    found[#found + 1] = key
    found[#found + 1] = value
  end
end
return found
"""

# KEYS[1] index, KEYS[2] failures; ARGV: the keys to look up. Answers {key, due_at, value, ...}
# for those remembered (the caller drops the expired ones; the scripts above collect them).
DEFERRED_AMONG_LUA = """
local found = {}
for _, key in ipairs(ARGV) do
  local value = redis.call('HGET', KEYS[2], key)
  local due = redis.call('ZSCORE', KEYS[1], key)
  if value and due then
    found[#found + 1] = key
    found[#found + 1] = due
    found[#found + 1] = value
  end
end
return found
"""

# --- outage mode: the restore rate and the breakers ------------------------------------------
#
# Single-node, like every script here: a breaker script touches three keys (the graph's
# record, its re-failures and the index of breakers not closed), which Redis Cluster would
# refuse unless they shared a hash slot. Every key expires (PEXPIRE, a grace period after its
# logical expiry), so nothing outlives what it is for.

# A rate is a sorted set of slot tokens scored by when each was taken: a sliding log, kept one
# interval. KEYS[1] the log; ARGV: now, since (now - interval), limit, token, redis_ttl_ms,
# deadline. Answers {'granted', now} or {'full', when the slot whose leaving frees one was
# taken}; a retry after a lost reply finds its own slot.
TAKE_RATE_SLOT_LUA = (
    DEADLINE_LUA
    + """
local taken = redis.call('ZSCORE', KEYS[1], ARGV[4])
if taken then return {'granted', taken} end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local used, limit = redis.call('ZCARD', KEYS[1]), tonumber(ARGV[3])
if used < limit then
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return {'granted', ARGV[1]}
end
local frees = redis.call('ZRANGE', KEYS[1], used - limit, used - limit, 'WITHSCORES')
return {'full', frees[2]}
"""
)

# KEYS[1] the log; ARGV: token.
RETURN_RATE_SLOT_LUA = """
return redis.call('ZREM', KEYS[1], ARGV[1])
"""

# The breaker of one graph: KEYS[1] its record (a hash of BREAKER_FIELDS; absent or expired is
# closed), KEYS[2] its re-failures (a sorted set: execution scored by when it last re-failed),
# KEYS[3] the index of breakers not closed (graph scored by its record's expiry). The steps are
# those of handler/store/breaker_steps.py. ``changed_by`` holds the id of the call that made
# the last transition (each call has its own: several instances judge one canary with the
# same canary token), so a retry after a lost reply is told it made it (``changed``).
# Replies: {state, opened_at, cooldown, canary_token, canary_execution, canary_at, changed,
# execution, at, execution, at, ...} (re-failures only from the calls that read them).
BREAKER_LUA = f"""
local GRACE = {REDIS_EXPIRY_GRACE_MS}
local KEPT = {REFAILURES_KEPT}
local FIELDS = {{'state', 'expires_at', 'opened_at', 'cooldown', 'canary_token',
                'canary_execution', 'canary_at', 'closed_at', 'changed_by'}}
local function fmt(number) return string.format('%.17g', number) end
local function load(now)
  local values = redis.call('HMGET', KEYS[1], unpack(FIELDS))
  if not values[1] or tonumber(values[2]) <= now then return nil end
  local record = {{}}
  for i, name in ipairs(FIELDS) do record[name] = values[i] or '' end
  return record
end
local function save(record, graph, now)
  redis.call('DEL', KEYS[1])
  local fields = {{}}
  for _, name in ipairs(FIELDS) do
    if record[name] and record[name] ~= '' then
      fields[#fields + 1] = name
      fields[#fields + 1] = record[name]
    end
  end
  redis.call('HSET', KEYS[1], unpack(fields))
  local ttl = math.ceil((tonumber(record.expires_at) - now) * 1000) + GRACE
  redis.call('PEXPIRE', KEYS[1], ttl)
  if record.state == 'closed' then
    redis.call('ZREM', KEYS[3], graph)
  else
    redis.call('ZADD', KEYS[3], record.expires_at, graph)
    if redis.call('PTTL', KEYS[3]) < ttl then redis.call('PEXPIRE', KEYS[3], ttl) end
  end
end
local function reply(record, changed, since)
  local out = {{'closed', '', '', '', '', '', changed}}
  if record and record.state ~= 'closed' then
    out = {{record.state}}
    for _, name in ipairs({{'opened_at', 'cooldown', 'canary_token', 'canary_execution',
                           'canary_at'}}) do
      out[#out + 1] = record[name] or ''
    end
    out[#out + 1] = changed
  end
  if since then
    local held = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. since, '+inf', 'WITHSCORES')
    for i = 1, #held do out[#out + 1] = held[i] end
  end
  return out
end
local function canary_of(record, token)
  return record and record.state == 'half_open' and token ~= '' and record.canary_token == token
end
"""

# ARGV: now, graph, execution, failed_at (not after now), since (now - window), window,
# threshold, cooldown, token.
RECORD_REFAILURE_LUA = (
    BREAKER_LUA
    + """
local now, failed_at, since = tonumber(ARGV[1]), tonumber(ARGV[4]), tonumber(ARGV[5])
local record = load(now)
local before_close = record and record.state == 'closed' and record.closed_at ~= ''
    and failed_at <= tonumber(record.closed_at)
if failed_at > since and not before_close then
  local current = redis.call('ZSCORE', KEYS[2], ARGV[3])
  if not current or tonumber(current) < failed_at then
    redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[5])
  local extra = redis.call('ZCARD', KEYS[2]) - KEPT
  if extra > 0 then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, extra - 1) end
  local ttl = math.ceil((failed_at + tonumber(ARGV[6]) - now) * 1000) + GRACE
  if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
end
local changed = '0'
if not record or record.state == 'closed' then
  local distinct = redis.call('ZCOUNT', KEYS[2], '(' .. ARGV[5], '+inf')
  local threshold = tonumber(ARGV[7])
  if threshold >= 1 and distinct >= threshold then
    local cooldown = tonumber(ARGV[8])
    record = {state = 'open', expires_at = fmt(now + cooldown + tonumber(ARGV[6])),
              opened_at = ARGV[1], cooldown = ARGV[8], changed_by = ARGV[9]}
    save(record, ARGV[2], now)
    changed = '1'
  end
elseif record.state == 'open' and record.changed_by == ARGV[9] then
  changed = '1'
end
return reply(record, changed, ARGV[5])
"""
)

# ARGV: now, since (now - window).
READ_BREAKER_LUA = (
    BREAKER_LUA
    + """
return reply(load(tonumber(ARGV[1])), '0', ARGV[2])
"""
)

# ARGV: now, graph, execution, token, window, deadline.
TAKE_CANARY_LUA = (
    DEADLINE_LUA
    + BREAKER_LUA
    + """
local now = tonumber(ARGV[1])
local record = load(now)
if canary_of(record, ARGV[4]) then return reply(record, '1') end
if record and record.state == 'open'
    and now >= tonumber(record.opened_at) + tonumber(record.cooldown) then
  record.state, record.canary_token = 'half_open', ARGV[4]
  record.canary_execution, record.canary_at = ARGV[3], ARGV[1]
  record.expires_at = fmt(now + tonumber(record.cooldown) + tonumber(ARGV[5]))
  record.changed_by = ARGV[4]
  save(record, ARGV[2], now)
  return reply(record, '1')
end
return reply(record, '0')
"""
)

# ARGV: now, graph, call id, canary token, window.
CLOSE_BREAKER_LUA = (
    BREAKER_LUA
    + """
local now = tonumber(ARGV[1])
local record = load(now)
if canary_of(record, ARGV[4]) then
  record = {state = 'closed', expires_at = fmt(now + tonumber(ARGV[5])), closed_at = ARGV[1],
            changed_by = ARGV[3]}
  save(record, ARGV[2], now)
  redis.call('DEL', KEYS[2])
  return reply(record, '1')
end
if record and record.state == 'closed' and record.changed_by == ARGV[3] then
  return reply(record, '1')
end
return reply(record, '0')
"""
)

# ARGV: now, graph, call id, canary token, max_cooldown, window.
REOPEN_BREAKER_LUA = (
    BREAKER_LUA
    + """
local now = tonumber(ARGV[1])
local record = load(now)
if canary_of(record, ARGV[4]) then
  local cooldown = tonumber(record.cooldown)
  cooldown = math.max(cooldown, math.min(2 * cooldown, tonumber(ARGV[5])))
  record = {state = 'open', expires_at = fmt(now + cooldown + tonumber(ARGV[6])),
            opened_at = ARGV[1], cooldown = fmt(cooldown), changed_by = ARGV[3]}
  save(record, ARGV[2], now)
  return reply(record, '1')
end
if record and record.state == 'open' and record.changed_by == ARGV[3] then
  return reply(record, '1')
end
return reply(record, '0')
"""
)

# ARGV: now, graph, call id, canary token, window.
RELEASE_CANARY_LUA = (
    BREAKER_LUA
    + """
local now = tonumber(ARGV[1])
local record = load(now)
if canary_of(record, ARGV[4]) then
  local due = tonumber(record.opened_at) + tonumber(record.cooldown)
  record.state, record.canary_token, record.canary_execution, record.canary_at =
      'open', '', '', ''
  record.expires_at = fmt(math.max(due, now) + tonumber(ARGV[5]))
  record.changed_by = ARGV[3]
  save(record, ARGV[2], now)
  return reply(record, '1')
end
if record and record.state == 'open' and record.changed_by == ARGV[3] then
  return reply(record, '1')
end
return reply(record, '0')
"""
)

# ARGV: now, graph. Answers 1 when the breaker was open or half-open.
RESET_BREAKER_LUA = (
    BREAKER_LUA
    + """
local record = load(tonumber(ARGV[1]))
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[2])
if record and record.state ~= 'closed' then return 1 end
return 0
"""
)

# KEYS[1] the execution's ledger (a list, oldest first, each "expires_at|entry"); ARGV: now,
# max_entries, redis_ttl_ms, then the entries. Append and trim in one step: the newest
# max_entries are kept, and expired ones are dropped from the head (entries are appended in
# time order; the loop is bounded by the list's length, at most max_entries).
LEDGER_STEP_LUA = """
local function ledger_append(key, now, max_entries, ttl_ms, first)
  for i = first, #ARGV do redis.call('RPUSH', key, ARGV[i]) end
  redis.call('LTRIM', key, -max_entries, -1)
  for _ = 1, redis.call('LLEN', key) do
    local head = redis.call('LINDEX', key, 0)
    local bar = string.find(head, '|', 1, true)
    if bar and tonumber(string.sub(head, 1, bar - 1)) > now then break end
    redis.call('LPOP', key)
  end
  redis.call('PEXPIRE', key, ttl_ms)
end
"""
LEDGER_APPEND_LUA = (
    LEDGER_STEP_LUA
    + """
ledger_append(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], 4)
return 1
"""
)

# KEYS[1] the quiet-listings hash (graph -> until when a sweep may skip listing it); ARGV: now,
# grace_ms, then graph, moment pairs. A moment not after now forgets the graph's mark; marks
# that have passed are dropped on the way (one field per graph: as small as the graph list),
# and the hash expires a grace after its latest mark (counted from the caller's now, the clock
# the marks are on), so it never outlives its use.
SET_QUIET_LUA = """
local now = tonumber(ARGV[1])
for i = 3, #ARGV, 2 do
  if tonumber(ARGV[i + 1]) > now then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  else
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
local entries = redis.call('HGETALL', KEYS[1])
local latest = nil
for i = 1, #entries, 2 do
  local moment = tonumber(entries[i + 1])
  if moment == nil or moment <= now then
    redis.call('HDEL', KEYS[1], entries[i])
  elseif latest == nil or moment > latest then
    latest = moment
  end
end
if latest then
  redis.call('PEXPIRE', KEYS[1], math.ceil((latest - now) * 1000) + tonumber(ARGV[2]))
end
return 0
"""

# KEYS[1] marker hash, KEYS[2] deferred index, KEYS[3] deferred failures, KEYS[4] budget sorted
# set, KEYS[5] the execution's ledger; ARGV: now, token, record ('' releases the marker),
# expires_at, redis_ttl_ms, key, budget step ('settle', 'refund' or ''), budget token, ledger
# max_entries ('' appends nothing), ledger redis_ttl_ms, then the ledger entries. What SETTLE
# or REFUND, FINISH or RELEASE, and LEDGER_APPEND do, in one script: all of it or nothing.
SETTLE_ITEM_LUA = (
    BUDGET_MEMBER_LUA
    + LEDGER_STEP_LUA
    + """
if ARGV[7] ~= '' then
  local held = redis.call('ZRANGE', KEYS[4], 0, -1, 'WITHSCORES')
  for i = 1, #held, 2 do
    local fields = member_fields(held[i])
    if fields[1] == ARGV[8] then
      if ARGV[7] == 'refund' then
        redis.call('ZREM', KEYS[4], held[i])
      elseif fields[3] then
        redis.call('ZREM', KEYS[4], held[i])
        redis.call('ZADD', KEYS[4], held[i + 1], fields[1] .. ':' .. fields[2])
      end
      break
    end
  end
end
if ARGV[3] ~= '' then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'state', 'done', 'token', ARGV[2], 'expires_at', ARGV[4],
             'record', ARGV[3], 'updated_at', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  redis.call('ZREM', KEYS[2], ARGV[6])
  redis.call('HDEL', KEYS[3], ARGV[6])
else
  local cur = redis.call('HMGET', KEYS[1], 'state', 'token')
  if cur[1] == 'in_progress' and cur[2] == ARGV[2] then redis.call('DEL', KEYS[1]) end
end
if ARGV[9] ~= '' then
  ledger_append(KEYS[5], tonumber(ARGV[1]), tonumber(ARGV[9]), ARGV[10], 11)
end
return 1
"""
)
