-- The data files each worker verified when it last registered, as a JSON array of
-- {"name": ..., "md5": ...}; the report's reproducibility block lists them for the workers that
-- ran a sweep. Workers registered before this column existed verified nothing that was recorded.
ALTER TABLE workers ADD COLUMN data_files_json TEXT NOT NULL DEFAULT '[]';
