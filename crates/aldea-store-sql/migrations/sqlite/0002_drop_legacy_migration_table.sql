-- sqlx's migrator (`_sqlx_migrations`) replaces the hand-written `schema_migrations` table.
DROP TABLE IF EXISTS schema_migrations;
