-- `make bench`: GET /tasks/{id}, each request for an id picked at random from
-- the file named by the first script argument (one task id a line):
--   wrk … -s scripts/bench/get_task.lua http://127.0.0.1:PORT -- ids.txt
-- Non-2xx answers are counted by report.lua.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "report.lua")

local ids = {}

function init(args)
   local path = args[1] or error("get_task.lua: give the ids file after --")
   for line in io.lines(path) do
      if #line > 0 then
         table.insert(ids, line)
      end
   end
   if #ids == 0 then
      error("get_task.lua: no task id in " .. path)
   end
   math.randomseed(os.time() * 1000 + (tid or 0))
end

function request()
   return wrk.format("GET", "/tasks/" .. ids[math.random(#ids)])
end
