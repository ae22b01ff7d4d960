-- Product categories a destination already has (Omnisend `POST /v3/categories`), so each is
-- created once however many orders name it; `categoryIDs` on products only segment when the
-- categories themselves exist (docs/connectors.md). Owned by consumers/fanout/categories.py.
CREATE TABLE fanout_categories (
    destination   text        NOT NULL,
    category_id   text        NOT NULL,
    title         text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (destination, category_id)
);
