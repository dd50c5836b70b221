-- sysbench 1.0 script for benches/load/mysql.sh: oltp_point_select with a new connection every --reconnect=N transactions (sysbench 1.0 has no --reconnect of its own).
--
-- Each event runs one primary-key SELECT (sbtest tables made by oltp_*'s prepare); after every
-- Nth event (default 1: every transaction, like pgbench -C) the thread closes its connection
-- and opens a new one (a full handshake and login), inside the event, so the connect cost is
-- part of the transaction's latency. A statement is prepared on first use on each connection,
-- so with --db-ps-mode=auto a transaction is connect + COM_STMT_PREPARE + COM_STMT_EXECUTE +
-- COM_STMT_CLOSE + COM_QUIT, as with a driver that prepares and a connection per request.
--
--   sysbench benches/load/reconnect_point_select.lua --db-driver=mysql --tables=4 ... run
-- (oltp_common is found on sysbench's own script path, /usr/share/sysbench.)

require("oltp_common")

sysbench.cmdline.options.reconnect =
   {"Open a new connection after every N transactions (0: never)", 1}

-- Per worker thread (each has its own Lua state): table number -> statement, its parameter.
local stmts, params = {}, {}
local events = 0

local function point_select(t)
   if stmts[t] == nil then
      stmts[t] = con:prepare(string.format("SELECT c FROM sbtest%u WHERE id=?", t))
      params[t] = stmts[t]:bind_create(sysbench.sql.type.INT)
      stmts[t]:bind_param(params[t])
   end
   return stmts[t], params[t]
end

-- oltp_common's thread_init and its restart hook call these two.
function prepare_statements()
end

function close_statements()
   for _, s in pairs(stmts) do
      s:close()
   end
   stmts, params = {}, {}
end

function event()
   local s, p = point_select(sysbench.rand.uniform(1, sysbench.opt.tables))
   p:set(sysbench.rand.default(1, sysbench.opt.table_size))
   s:execute()
   local every = sysbench.opt.reconnect
   if every > 0 then
      events = events + 1
      if events % every == 0 then
         close_statements()
         -- A new connection object: con:reconnect() crashes inside libmariadb (sysbench
         -- 1.0.20 with Debian 12's libmariadb3). The GC frees the old one.
         con:disconnect()
         con = drv:connect()
      end
   end
end
