-- `make bench`: POST of the JSON body in the file named by the first script
-- argument to the URL given to wrk (/models/default), the same body every time:
--   wrk … -s scripts/bench/post.lua http://127.0.0.1:PORT/models/default -- body.json
-- Without a request_id, each POST creates a new task. Non-2xx answers (202 is
-- the success) are counted by report.lua.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "report.lua")

function init(args)
   local path = args[1] or error("post.lua: give the body file after --")
   local f = assert(io.open(path, "rb"))
   wrk.method = "POST"
   wrk.body = f:read("*a")
   f:close()
   wrk.headers["Content-Type"] = "application/json"
end
