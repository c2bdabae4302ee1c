package vault

// Binding ciphertexts to their rows.
//
// An account secret is age-encrypted to the data recipient, which is
// public: anyone can make a ciphertext for it, and a secret copied from
// one account's row to another would open as the other's. So the sealed
// plaintext carries the account id and a tag, an HMAC of that id under a
// key derived from the data identity's secret; Secrets checks both. A
// payload is sealed with XChaCha20-Poly1305 under a secret key, with its
// request id as associated data.
//
// Ciphertexts made by the previous release carry neither. Its data keys
// have bound = 0 (which the row's MAC covers): under them an unbound secret
// still opens. The first open by the master key holder (the one that adds
// the MACs) re-seals every such secret bound to its row and marks every
// data key bound, so from then on an unbound secret is refused everywhere;
// `key rotate --data` re-seals them bound under a new key too. A payload
// sealed without associated data still opens (only the payload key's
// holder could have made one, so none can be forged), but such old
// payloads can be moved between rows until retention deletes them.

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// ErrNotBound is returned for a sealed secret or payload that does not
// belong to the row it was read from.
var ErrNotBound = errors.New("it does not belong to this row: the database was changed outside claudeflare")

const (
	rootSaltDataKey = "claudeflare data key root v1"
	purposeBind     = "claudeflare account secret binding v1"
	payloadADPrefix = "claudeflare payload v1\x00request\x00"
)

// bindKey derives the tag key of a data key from its identity text.
func bindKey(text []byte) []byte {
	prk, err := hkdf.Extract(sha256.New, text, []byte(rootSaltDataKey))
	if err != nil {
		panic(err)
	}
	return purposeKey(prk, purposeBind)
}

func (dk *dataKey) accountTag(accountID int64) []byte {
	h := hmac.New(sha256.New, dk.bindKey)
	h.Write([]byte("account\x00" + strconv.FormatInt(accountID, 10)))
	return h.Sum(nil)
}

// sealedSecrets is the plaintext of a sealed account secret.
type sealedSecrets struct {
	Secrets
	AccountID int64  `json:"account_id,omitempty"`
	Tag       []byte `json:"bind,omitempty"`
}

// bindSecrets is the plaintext of s sealed for accountID under dk.
func bindSecrets(dk *dataKey, accountID int64, s Secrets) ([]byte, error) {
	return json.Marshal(sealedSecrets{Secrets: s, AccountID: accountID, Tag: dk.accountTag(accountID)})
}

// unbindSecrets parses the plaintext of a secret read from accountID's row
// under dk and checks that it was sealed for that row.
func unbindSecrets(dk *dataKey, accountID int64, plain []byte) (Secrets, error) {
	var ss sealedSecrets
	if err := json.Unmarshal(plain, &ss); err != nil {
		return Secrets{}, errors.New("malformed")
	}
	switch {
	case ss.Tag == nil && ss.AccountID == 0 && !dk.bound:
		// Sealed by the previous release, under one of its data keys.
	case ss.Tag == nil:
		return Secrets{}, fmt.Errorf("the secret of account %d is not bound to its account: %w", accountID, ErrNotBound)
	case ss.AccountID != accountID || !hmac.Equal(ss.Tag, dk.accountTag(accountID)):
		return Secrets{}, fmt.Errorf("the secret stored for account %d was sealed for another account: %w", accountID, ErrNotBound)
	}
	return ss.Secrets, nil
}

func payloadAD(requestID string) []byte {
	return []byte(payloadADPrefix + requestID)
}
