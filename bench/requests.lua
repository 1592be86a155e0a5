-- wrk script for scripts/bench.py: the requests that need a body or a changing path.
--
--   wrk -t2 -c16 -d10s --latency -H "Authorization: Bearer ..." -s bench/requests.lua \
--       http://127.0.0.1:8000 -- MODE [IDS_FILE]
--
-- MODE  get    GET   /api/tasks/<id>, rotating over the ids in IDS_FILE (one UUID per line)
--       patch  PATCH /api/tasks/<id> {"completed": true|false}, rotating; each pass over the ids
--              flips the value (no If-Match)
--       post   POST  /api/tasks with a realistic body (title, description, priority, due date,
--              tags); titles carry a counter so no two bodies are the same
--       delete DELETE /api/tasks/<id>, each id of IDS_FILE once while the thread has not used up
--              its share (scripts/bench_write_tracking.py loads more ids than a run deletes, and
--              counts the 204s)
--
-- Each wrk thread starts at its own offset in the id list, so the threads do not update the same
-- rows at the same moment. The Authorization header comes from -H (wrk.headers).

local thread_count = 0

function setup(thread)
   thread:set("thread_index", thread_count)
   thread_count = thread_count + 1
end

local mode = nil
local ids = {}
local counter = 0
local priorities = { "low", "medium", "high" }

function init(args)
   mode = args[1]
   if mode ~= "get" and mode ~= "patch" and mode ~= "post" and mode ~= "delete" then
      error("requests.lua: MODE must be get, patch, post or delete, got " .. tostring(mode))
   end
   if args[2] then
      for line in io.lines(args[2]) do
         if #line > 0 then ids[#ids + 1] = line end
      end
   end
   if mode ~= "post" and #ids == 0 then
      error("requests.lua: " .. mode .. " needs a file of task ids")
   end
   local index = thread_index or 0
   if mode == "post" then
      counter = index * 1000000
   else
      counter = index * math.max(1, math.floor(#ids / 2))
   end
   if mode == "patch" or mode == "post" then wrk.headers["Content-Type"] = "application/json" end
end

function request()
   counter = counter + 1
   if mode == "get" then
      return wrk.format("GET", "/api/tasks/" .. ids[(counter % #ids) + 1], nil, nil)
   elseif mode == "patch" then
      local id = ids[(counter % #ids) + 1]
      local flip = math.floor(counter / #ids) % 2 == 0
      local body = flip and '{"completed":true}' or '{"completed":false}'
      return wrk.format("PATCH", "/api/tasks/" .. id, nil, body)
   elseif mode == "delete" then
      return wrk.format("DELETE", "/api/tasks/" .. ids[(counter % #ids) + 1], nil, nil)
   else
      local body = string.format(
         '{"title":"Load test task %d","description":"Created by scripts/bench.py",' ..
         '"priority":"%s","due_date":"2030-06-%02dT09:30:00Z","tags":["bench","load"]}',
         counter, priorities[(counter % 3) + 1], (counter % 28) + 1)
      return wrk.format("POST", "/api/tasks", nil, body)
   end
end
