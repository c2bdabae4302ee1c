package vault

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"unicode"

	"filippo.io/age"

	"github.com/claudeflare/claudeflare/internal/fsutil"
)

// IdentityFileName is the default master identity file in the data dir.
const IdentityFileName = "identity.txt"

// CredentialName is the systemd credential (LoadCredential=) read from
// $CREDENTIALS_DIRECTORY when it is set.
const CredentialName = "claudeflare-identity"

// ErrWrongKey is returned when the master key does not open the vault.
var ErrWrongKey = errors.New("the master key does not open this vault (wrong identity, key or passphrase)")

// ErrNoKey is returned when no master key source is available.
var ErrNoKey = errors.New("no master key found")

// ErrNeedPassphrase is returned by Open for a passphrase-protected vault
// when no key was given: a command at a terminal may prompt and retry;
// a daemon never prompts. It is also an ErrNoKey.
var ErrNeedPassphrase = fmt.Errorf("%w: the vault is protected by a passphrase and CLAUDEFLARE_PASSPHRASE is not set", ErrNoKey)

// Suffixes of the files a master-key rotation leaves next to an identity
// file while it runs: the incoming identity and the outgoing one. The
// loader tries them too, so that a crash at any step leaves a vault that
// opens with the files on disk.
const (
	NextSuffix = ".next"
	OldSuffix  = ".old"
)

// MinPassphraseLength is the length, in characters, a new master
// passphrase must have at least.
const MinPassphraseLength = 12

// ErrWeakPassphrase is returned for a new master passphrase that is too
// short or made of one kind of character. Existing vaults are not held to
// it: a weaker passphrase set by an earlier release still opens its vault.
var ErrWeakPassphrase = errors.New("the new passphrase is too weak")

// CheckNewPassphrase checks a passphrase about to protect a vault: at
// least MinPassphraseLength characters, of at least two kinds (lower case,
// upper case, digits, others such as spaces and punctuation). A few words
// with spaces pass; one repeated character or only digits do not.
func CheckNewPassphrase(p string) error {
	n := 0
	var lower, upper, digit, other bool
	for _, r := range p {
		n++
		switch {
		case unicode.IsLower(r):
			lower = true
		case unicode.IsUpper(r):
			upper = true
		case unicode.IsDigit(r):
			digit = true
		default:
			other = true
		}
	}
	if n < MinPassphraseLength {
		return fmt.Errorf("%w: use at least %d characters (a few words with spaces will do)", ErrWeakPassphrase, MinPassphraseLength)
	}
	kinds := 0
	for _, k := range []bool{lower, upper, digit, other} {
		if k {
			kinds++
		}
	}
	if kinds < 2 {
		return fmt.Errorf("%w: mix at least two kinds of characters (letters, digits, spaces or punctuation)", ErrWeakPassphrase)
	}
	return nil
}

// scryptWorkFactor is the log2 scrypt work factor for passphrase wraps
// (age's default, about a second). Tests lower it.
var scryptWorkFactor = 18

// KeySource says where the master key comes from. The first that is set
// wins (flag > environment > config file > default, as every setting):
// IdentityFlag, EncryptionKey, IdentityFile, Passphrase, the systemd
// credential in CredentialsDir, then ConfigIdentityFile or else
// <DataDir>/identity.txt. Resolve keeps only the winner.
type KeySource struct {
	IdentityFlag       string // --identity FILE
	EncryptionKey      string // CLAUDEFLARE_ENCRYPTION_KEY: an AGE-SECRET-KEY-1... identity
	IdentityFile       string // CLAUDEFLARE_IDENTITY_FILE
	Passphrase         string // CLAUDEFLARE_PASSPHRASE (age scrypt)
	CredentialsDir     string // $CREDENTIALS_DIRECTORY (systemd)
	ConfigIdentityFile string // identity_file in the config file: in place of <DataDir>/identity.txt
	DataDir            string
}

// Resolve returns the source that wins, alone: every other key field is
// cleared, and an identity file from the flag or the config file is in
// IdentityFile. So a caller that looks at the fields (is it a passphrase?
// an identity file?) sees the key that will be used, and the rest of this
// package needs to know the order in this one place. DataDir stays.
func (ks KeySource) Resolve() KeySource {
	out := KeySource{DataDir: ks.DataDir}
	switch {
	case ks.IdentityFlag != "":
		out.IdentityFile = ks.IdentityFlag
	case ks.EncryptionKey != "":
		out.EncryptionKey = ks.EncryptionKey
	case ks.IdentityFile != "":
		out.IdentityFile = ks.IdentityFile
	case ks.Passphrase != "":
		out.Passphrase = ks.Passphrase
	case ks.CredentialsDir != "" && fileExists(filepath.Join(ks.CredentialsDir, CredentialName)):
		out.CredentialsDir = ks.CredentialsDir
	case ks.ConfigIdentityFile != "":
		out.IdentityFile = ks.ConfigIdentityFile
	}
	return out
}

// Kinds of master key, as stored in the vault.
const (
	MasterIdentity   = "identity"
	MasterPassphrase = "passphrase"
)

// Where a master key came from.
const (
	sourceEnv        = "env"
	sourceFile       = "file" // --identity, CLAUDEFLARE_IDENTITY_FILE, config identity_file
	sourcePassphrase = "passphrase"
	sourceCredential = "credential"
	sourceDefault    = "default" // <data dir>/identity.txt
)

// master is a resolved master key.
type master struct {
	identities []age.Identity  // every identity that may open the vault: primary, then leftovers of a rotation
	primary    []age.Identity  // the identities of the source itself
	recipients []age.Recipient // primary's recipients; empty for a passphrase (use scrypt)
	passphrase string
	where      string // description for messages, never the key
	path       string // identity file path, if any
	source     string // one of the source* constants

	rootMu   sync.Mutex
	passRoot []byte // the passphrase's scrypt root key, once derived
}

// kind is MasterPassphrase for a passphrase (never empty), else
// MasterIdentity.
func (m *master) kind() string {
	if m.passphrase != "" {
		return MasterPassphrase
	}
	return MasterIdentity
}

func (ks KeySource) defaultIdentity() string {
	return filepath.Join(ks.DataDir, IdentityFileName)
}

// Identities resolves the master key to age identities, creating
// nothing: what opens the vault, and what opens a backup made for it.
// Errors are those of Open (ErrNoKey, ErrKeyFileMode, ...) and never quote
// the key.
func (ks KeySource) Identities() ([]age.Identity, error) {
	m, err := ks.load(false, false)
	if err != nil {
		return nil, err
	}
	return m.identities, nil
}

// load resolves the master key. With create, a missing default identity
// file is generated (O_EXCL, 0600); otherwise it is ErrNoKey.
func (ks KeySource) load(create bool, pq bool) (*master, error) {
	ks = ks.Resolve()
	var m *master
	var err error
	switch {
	case ks.EncryptionKey != "":
		ids, err := parseIdentities(strings.NewReader(ks.EncryptionKey))
		if err != nil {
			return nil, fmt.Errorf("CLAUDEFLARE_ENCRYPTION_KEY: %w", err)
		}
		m, err = fromIdentities(ids, "CLAUDEFLARE_ENCRYPTION_KEY", "")
		if err != nil {
			return nil, err
		}
		m.source = sourceEnv
		return m, nil
	case ks.IdentityFile != "":
		m, err = loadIdentityFile(ks.IdentityFile, create, pq)
		if m != nil {
			m.source = sourceFile
		}
	case ks.Passphrase != "":
		return passphraseMaster(ks.Passphrase, "CLAUDEFLARE_PASSPHRASE")
	case ks.CredentialsDir != "" && fileExists(filepath.Join(ks.CredentialsDir, CredentialName)):
		m, err = loadIdentityFile(filepath.Join(ks.CredentialsDir, CredentialName), false, false)
		if m != nil {
			m.source = sourceCredential
		}
		return m, err
	default:
		m, err = loadIdentityFile(ks.defaultIdentity(), create, pq)
		if m != nil {
			m.source = sourceDefault
		}
	}
	if err != nil {
		return nil, err
	}
	// Leftovers of an interrupted rotation open the vault too.
	for _, p := range []string{m.path + NextSuffix, m.path + OldSuffix} {
		if ids, ok := readAuxIdentityFile(p); ok {
			m.identities = append(m.identities, ids...)
		}
	}
	return m, nil
}

// auxMarker starts every identity file a rotation leaves next to the
// identity file (FILE.next, FILE.old). A file by that name without it is
// the user's, and is neither read nor removed.
const auxMarker = "# claudeflare"

// readAuxIdentityFile reads FILE.next or FILE.old if it is one of ours,
// private and well formed; anything else is skipped, since the identity
// file itself decides whether the vault opens.
func readAuxIdentityFile(path string) ([]age.Identity, bool) {
	b, err := os.ReadFile(path)
	if err != nil || !bytes.HasPrefix(b, []byte(auxMarker)) {
		return nil, false
	}
	ids, err := readIdentityFile(path)
	if err != nil {
		return nil, false
	}
	return ids, true
}

func passphraseMaster(passphrase, where string) (*master, error) {
	id, err := age.NewScryptIdentity(passphrase)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	return &master{identities: []age.Identity{id}, primary: []age.Identity{id}, passphrase: passphrase,
		where: where, source: sourcePassphrase}, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func loadIdentityFile(path string, create, pq bool) (*master, error) {
	ids, err := readIdentityFile(path)
	if errors.Is(err, os.ErrNotExist) && create {
		if _, err := GenerateIdentityFile(path, pq); err != nil {
			return nil, err
		}
		ids, err = readIdentityFile(path)
	}
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: identity file %s does not exist", ErrNoKey, path)
	}
	if err != nil {
		return nil, err
	}
	return fromIdentities(ids, "identity file "+path, path)
}

// readIdentityFile reads the identities in path, refusing a file that
// others can read. A missing file gives an error that is os.ErrNotExist.
func readIdentityFile(path string) ([]age.Identity, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("open identity file: %w", err)
	}
	defer f.Close()
	if err := checkPrivate(f, path); err != nil {
		return nil, err
	}
	ids, err := parseIdentities(io.LimitReader(f, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("identity file %s: %w", path, err)
	}
	return ids, nil
}

// ErrKeyFileMode is returned for identity files that others can read.
var ErrKeyFileMode = errors.New("identity file is readable by other users")

func checkPrivate(f *os.File, path string) error {
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat identity file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%w: %s has mode %04o (hint: chmod 600 %s)", ErrKeyFileMode, path, st.Mode().Perm(), path)
	}
	return nil
}

func parseIdentities(r io.Reader) ([]age.Identity, error) {
	ids, err := age.ParseIdentities(r)
	if err != nil {
		// age's parse errors can quote the offending line; never repeat it.
		return nil, errors.New("not a valid age identity (expected AGE-SECRET-KEY-1...)")
	}
	return ids, nil
}

func fromIdentities(ids []age.Identity, where, path string) (*master, error) {
	m := &master{identities: ids, primary: ids, where: where, path: path}
	for _, id := range ids {
		switch id := id.(type) {
		case *age.X25519Identity:
			m.recipients = append(m.recipients, id.Recipient())
		case *age.HybridIdentity:
			m.recipients = append(m.recipients, id.Recipient())
		}
	}
	if len(m.recipients) == 0 {
		return nil, fmt.Errorf("%s: no usable age identity", where)
	}
	return m, nil
}

// recipientStrings are the public recipients, one per line.
func (m *master) recipientStrings() []string {
	var out []string
	for _, r := range m.recipients {
		if s, ok := r.(fmt.Stringer); ok {
			out = append(out, s.String())
		}
	}
	return out
}

// wrapTo returns the age recipients that a data key is wrapped to.
func (m *master) wrapTo() ([]age.Recipient, error) {
	if m.kind() == MasterPassphrase {
		r, err := age.NewScryptRecipient(m.passphrase)
		if err != nil {
			return nil, err
		}
		r.SetWorkFactor(scryptWorkFactor)
		return []age.Recipient{r}, nil
	}
	return m.recipients, nil
}

// GenerateIdentityFile creates a new master identity at path, mode 0600,
// failing if path exists (written and fsynced, then linked into place:
// fsutil.WriteFileExclusive), and returns its recipient. With pq, the
// identity is age's hybrid post-quantum kind (AGE-SECRET-KEY-PQ-1...).
func GenerateIdentityFile(path string, pq bool) (string, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("create key directory: %w", err)
	}
	text, recipient, err := newIdentityText(pq)
	if err != nil {
		return "", err
	}
	if err := fsutil.WriteFileExclusive(path, []byte(text), 0o600); err != nil {
		return "", fmt.Errorf("create identity file: %w", err)
	}
	return recipient, nil
}

func newIdentityText(pq bool) (text, recipient string, err error) {
	var idStr string
	if pq {
		id, err := age.GenerateHybridIdentity()
		if err != nil {
			return "", "", fmt.Errorf("generate identity: %w", err)
		}
		idStr, recipient = id.String(), id.Recipient().String()
	} else {
		id, err := age.GenerateX25519Identity()
		if err != nil {
			return "", "", fmt.Errorf("generate identity: %w", err)
		}
		idStr, recipient = id.String(), id.Recipient().String()
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# claudeflare master identity: keep it secret, keep it safe\n")
	fmt.Fprintf(&b, "# public key: %s\n", recipient)
	fmt.Fprintf(&b, "%s\n", idStr)
	return b.String(), recipient, nil
}
