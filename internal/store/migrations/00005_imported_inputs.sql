-- +goose Up
-- enqueuer import adds cells to cell_params with only the inputs of its
-- file: the seed's mu0, sigma and xi may be missing (NULL) like any
-- imported input. LoadCells reports a NULL input as missing.
ALTER TABLE cell_params
    ALTER COLUMN mu0 DROP NOT NULL,
    ALTER COLUMN sigma DROP NOT NULL,
    ALTER COLUMN xi DROP NOT NULL;

-- +goose Down
-- Fails while a cell lacks one of them; delete or fill those rows first.
ALTER TABLE cell_params
    ALTER COLUMN mu0 SET NOT NULL,
    ALTER COLUMN sigma SET NOT NULL,
    ALTER COLUMN xi SET NOT NULL;
