"""The wire format both sides speak: signed envelopes, the hash chain, the state digest, offers, experiments and
event batches."""
