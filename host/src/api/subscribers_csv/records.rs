//! CSV records from chunks as they arrive: csv-core's push parser, fed by
//! the request body, so parsing needs no thread of its own and never
//! waits on the client. What is ours is the record buffer around it,
//! capped in bytes: one quoted field spanning a whole upload cannot grow
//! memory past `max_record`.

/// Fields a record may have (the header's columns bound what is used).
const MAX_FIELDS: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("the record starting on line {line} is longer than {max} KiB", max = .max >> 10)]
    TooLong { line: u64, max: usize },
    #[error("the record starting on line {line} has more than {MAX_FIELDS} fields")]
    TooManyFields { line: u64 },
}

impl RecordError {
    /// The line the record in question starts on.
    pub fn line(&self) -> u64 {
        match self {
            RecordError::TooLong { line, .. } | RecordError::TooManyFields { line } => *line,
        }
    }
}

/// One record: its fields' bytes and the line it starts on (1-based).
pub struct Record<'a> {
    pub line: u64,
    bytes: &'a [u8],
    ends: &'a [usize],
}

impl<'a> Record<'a> {
    pub fn fields(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        let bytes = self.bytes;
        self.ends.iter().scan(0, move |start, &end| {
            let f = &bytes[*start..end];
            *start = end;
            Some(f)
        })
    }
}

pub struct Records {
    core: csv_core::Reader,
    out: Vec<u8>,
    ends: Vec<usize>,
    nout: usize,
    nend: usize,
    /// The line the record in progress starts on.
    start: u64,
    max_record: usize,
}

impl Records {
    pub fn new(max_record: usize) -> Records {
        // Records end at `\n` only; a `\r` before it stays with the last
        // cell, which the row mapping trims. A position's line is then the
        // line the next record starts on, for LF and CRLF files alike.
        let core = csv_core::ReaderBuilder::new()
            .terminator(csv_core::Terminator::Any(b'\n'))
            .build();
        Records {
            core,
            out: vec![0; 4096],
            ends: vec![0; 64],
            nout: 0,
            nend: 0,
            start: 1,
            max_record,
        }
    }

    /// The line the record in progress starts on.
    pub fn line(&self) -> u64 {
        self.start
    }

    /// Parses `input` (empty: the end of the file), handing each complete
    /// record to `each`; a record left incomplete waits for the next chunk.
    /// `each` returns false to stop early.
    pub fn feed(&mut self, mut input: &[u8], mut each: impl FnMut(Record<'_>) -> bool) -> Result<(), RecordError> {
        let end_of_file = input.is_empty();
        loop {
            let (result, nin, nout, nend) =
                self.core
                    .read_record(input, &mut self.out[self.nout..], &mut self.ends[self.nend..]);
            input = &input[nin..];
            // Field ends count from the record's start, across calls.
            self.nout += nout;
            self.nend += nend;
            use csv_core::ReadRecordResult as R;
            match result {
                R::InputEmpty if !end_of_file => return Ok(()),
                R::InputEmpty => {}
                R::OutputFull => {
                    if self.out.len() >= self.max_record {
                        return Err(RecordError::TooLong {
                            line: self.start,
                            max: self.max_record,
                        });
                    }
                    let grown = (self.out.len() * 2).min(self.max_record);
                    self.out.resize(grown, 0);
                }
                R::OutputEndsFull => {
                    if self.ends.len() >= MAX_FIELDS {
                        return Err(RecordError::TooManyFields { line: self.start });
                    }
                    let grown = (self.ends.len() * 2).min(MAX_FIELDS);
                    self.ends.resize(grown, 0);
                }
                R::Record => {
                    let record = Record {
                        line: self.start,
                        bytes: &self.out[..self.nout],
                        ends: &self.ends[..self.nend],
                    };
                    let go_on = each(record);
                    self.nout = 0;
                    self.nend = 0;
                    // csv-core counts lines from 1: the next record starts
                    // on the line its terminator moved to.
                    self.start = self.core.line();
                    if !go_on {
                        return Ok(());
                    }
                }
                R::End => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(chunks: &[&[u8]], max: usize) -> Result<Vec<(u64, Vec<String>)>, RecordError> {
        let mut r = Records::new(max);
        let mut out = Vec::new();
        let mut push = |rec: Record<'_>| {
            out.push((
                rec.line,
                rec.fields().map(|f| String::from_utf8_lossy(f).into_owned()).collect(),
            ));
            true
        };
        for c in chunks {
            r.feed(c, &mut push)?;
        }
        r.feed(b"", &mut push)?;
        Ok(out)
    }

    #[test]
    fn records_across_chunks_with_their_lines() {
        let got = all(&[b"email,na", b"me\na@x,\"A\nB\"\r\n", b"b@x,C"], 1 << 20).unwrap();
        assert_eq!(
            got,
            vec![
                (1, vec!["email".into(), "name".into()]),
                (2, vec!["a@x".into(), "A\nB\r".into()]),
                (4, vec!["b@x".into(), "C".into()]),
            ]
        );
    }

    #[test]
    fn lines_of_a_crlf_file_in_one_chunk() {
        let text = b"email,name\r\nada,Ada\r\nnot,No\r\n\"b\",\"B\nS\"\r\ncy,Cy\r\n";
        let lines: Vec<u64> = all(&[text], 1 << 20).unwrap().into_iter().map(|(l, _)| l).collect();
        assert_eq!(lines, [1, 2, 3, 4, 6]);
        let lf = String::from_utf8_lossy(text).replace("\r\n", "\n");
        let lines: Vec<u64> = all(&[lf.as_bytes()], 1 << 20)
            .unwrap()
            .into_iter()
            .map(|(l, _)| l)
            .collect();
        assert_eq!(lines, [1, 2, 3, 4, 6]);
    }

    #[test]
    fn byte_by_byte_is_the_same() {
        let text = b"email,name\r\n\"q,\"\"x\"\"\",2\n\nc,3";
        let whole = all(&[text], 1 << 20).unwrap();
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(all(&bytes, 1 << 20).unwrap(), whole);
    }

    #[test]
    fn a_field_past_the_cap_stops_with_its_line() {
        let big = vec![b'a'; 10_000];
        let mut chunks: Vec<&[u8]> = vec![b"email\nok\n\""];
        chunks.extend(big.chunks(1000));
        let err = all(&chunks, 4096).unwrap_err();
        assert_eq!(err, RecordError::TooLong { line: 3, max: 4096 });
        let many = "a,".repeat(MAX_FIELDS + 1);
        assert!(matches!(
            all(&[many.as_bytes()], 1 << 20),
            Err(RecordError::TooManyFields { line: 1 })
        ));
    }
}
