-- id: QH017
-- title: Shell history deleted or truncated in a container
-- severity: high
-- mitre: T1070.003
-- description: A shell history file (.bash_history, .ash_history, .zsh_history,
--   .sh_history, .history, .python_history and the like) deleted, truncated, replaced by a
--   rename or pointed somewhere else by a symlink (`ln -sf /dev/null ~/.bash_history`).
--   Deliberately not flagged: a process rewriting a history file it read before (a shell
--   saving its own history on exit looks exactly like that), and appends.
WITH clearing AS (
  SELECT w.*
  FROM file_writes w
  WHERE w.container_id IS NOT NULL AND w.succeeded
    AND ((w.event IN ('unlink', 'truncate')
          OR (w.event = 'open' AND (CAST(w.flags AS BIGINT) & 512) <> 0))
         AND w.path ~ '(^|/)\.[a-z_]*history$'
         OR w.event IN ('rename', 'symlink', 'link') AND w.path2 ~ '(^|/)\.[a-z_]*history$')
)
-- The clearings that no earlier read of the same file by the same process explains (an
-- editor or shell rewriting its history reads it first), as an anti join: the clearings are
-- its build side, the opens stream past, and nothing is counted or read twice.
SELECT c.time, c.host, c.container_id, c.pid, c.comm, 'file' AS source_table, c.ktime_ns,
       concat(c.comm, ' ', c.event, ' ', coalesce(c.path2, c.path)) AS evidence
FROM clearing c
LEFT ANTI JOIN file r
  ON r.host = c.host AND r.pid = c.pid AND r.event = 'open' AND r.ret >= 0
 AND coalesce(r.abs_path, r.path) = c.path AND (CAST(r.flags AS BIGINT) & 3) <> 1
 AND r.ktime_ns < c.ktime_ns AND c.event = 'open'
