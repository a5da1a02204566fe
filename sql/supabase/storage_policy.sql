-- Supabase Storage: the public images bucket and its public read policy.
-- Applied by `make migrate-storage-policy` (DATABASE_URL = the Supabase database); safe to run twice.
-- {bucket} is replaced by STORAGE_BUCKET, quoted as a literal.

INSERT INTO storage.buckets (id, name, public, file_size_limit, allowed_mime_types)
VALUES ({bucket}, {bucket}, TRUE, 5242880, ARRAY['image/png', 'image/jpeg', 'image/webp', 'image/gif'])
ON CONFLICT (id) DO UPDATE SET public = TRUE;

DO $policy$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_policies
        WHERE schemaname = 'storage' AND tablename = 'objects' AND policyname = 'Public read ' || {bucket}
    ) THEN
        EXECUTE format(
            'CREATE POLICY %I ON storage.objects FOR SELECT USING (bucket_id = %L)',
            'Public read ' || {bucket}, {bucket}
        );
    END IF;
END
$policy$;
