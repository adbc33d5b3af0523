-- `make bench`: plain GET of the URL given to wrk (/healthz, /tasks?user_id=…),
-- counting non-2xx answers (report.lua).
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "report.lua")
