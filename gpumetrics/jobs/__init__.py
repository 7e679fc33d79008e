"""Background jobs as plain functions and classes: testable without a scheduler."""
