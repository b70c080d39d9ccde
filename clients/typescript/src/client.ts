// A tiny typed client for admit, built on the documents GraphQL Code Generator makes from
// src/operations.graphql. Copy it into your app, or use the generated types with your own
// GraphQL client (urql, Apollo, TanStack Query, ...).
import {
  ChangePasswordDocument,
  ConfirmAccountDocument,
  PasswordPolicyDocument,
  RegisterDocument,
  RequestPasswordResetDocument,
  ResendConfirmationDocument,
  ResetPasswordDocument,
  RevokeSessionDocument,
  SignInDocument,
  SignOutDocument,
  ViewerDocument,
  type ErrorCode,
  type RegisterInput,
  type ViewerQuery,
} from "./gql/graphql";
import type { TypedDocumentString } from "./gql/graphql";

/** A problem to show next to a form field, keyed by the input field's name. */
export type FieldErrors = Partial<Record<string, { message: string; code: ErrorCode }>>;

/** What a sign-up form needs to know after submitting. */
export type SignUpOutcome =
  | { kind: "accepted" }
  | { kind: "invalid"; fields: FieldErrors }
  | { kind: "rateLimited"; retryAfterSeconds: number };

/** What a landing page needs to know after the person clicked "Confirm". */
export type ConfirmOutcome =
  | { kind: "confirmed"; email: string; confirmedAt: string | null }
  | { kind: "expired" | "superseded" | "invalid"; message: string };

/** What a sign-in form needs to know after submitting. */
export type SignInOutcome =
  | { kind: "signedIn"; email: string; sessionToken: string | null }
  | { kind: "invalidCredentials" | "emailNotConfirmed" | "invalid"; message: string }
  | { kind: "rateLimited"; retryAfterSeconds: number; message: string };

/** What a reset page needs to know after the person submitted a new password. */
export type ResetOutcome =
  | { kind: "changed"; email: string }
  | { kind: "expired" | "superseded" | "used" | "invalid" | "password"; message: string };

/** The signed-in person, or null. */
export type Viewer = ViewerQuery["viewer"];

/**
 * admit was too busy (its password hashing queue was full) or could not reach its database:
 * nothing was done, and the same call may be made again after `retryAfterSeconds`.
 */
export class AdmitUnavailableError extends Error {
  constructor(
    message: string,
    readonly retryAfterSeconds: number,
  ) {
    super(message);
    this.name = "AdmitUnavailableError";
  }
}

/** A GraphQL error as admit sends it. */
type GraphQLError = {
  message: string;
  extensions?: { code?: string; retryAfterSeconds?: number; requestId?: string };
};

/**
 * Browsers: `new AdmitClient("https://id.example.com/graphql")` and sign in with the default
 * cookie delivery; the `HttpOnly` cookie rides along on every call (`credentials: "include"`),
 * and page scripts never see the token.
 *
 * Native apps and servers: sign in with `signIn(email, password, "BEARER")`, keep the returned
 * `sessionToken` in the platform's secure storage, and make a client with it:
 * `new AdmitClient(endpoint, sessionToken)` sends `Authorization: Bearer ...` on every call.
 */
export class AdmitClient {
  constructor(
    private readonly endpoint: string,
    private readonly sessionToken?: string,
  ) {}

  private async execute<TResult, TVariables>(
    document: TypedDocumentString<TResult, TVariables>,
    variables: TVariables,
  ): Promise<TResult> {
    const response = await fetch(this.endpoint, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/graphql-response+json, application/json",
        ...(this.sessionToken ? { Authorization: `Bearer ${this.sessionToken}` } : {}),
      },
      credentials: this.sessionToken ? "omit" : "include",
      body: JSON.stringify({ query: document.toString(), variables }),
    });
    const body = (await response.json()) as { data?: TResult; errors?: GraphQLError[] };
    if (!body.data) {
      const unavailable = body.errors?.find((error) => error.extensions?.code === "SERVICE_UNAVAILABLE");
      if (unavailable) {
        const header = Number(response.headers.get("Retry-After"));
        const seconds = unavailable.extensions?.retryAfterSeconds ?? (header > 0 ? header : 1);
        throw new AdmitUnavailableError(unavailable.message, seconds);
      }
      throw new Error(body.errors?.map((error) => error.message).join("; ") ?? `HTTP ${response.status}`);
    }
    return body.data;
  }

  /** The password rule, for a live hint under the password field. */
  async passwordPolicy(): Promise<{ minLength: number; maxLength: number }> {
    const data = await this.execute(PasswordPolicyDocument, {});
    return data.passwordPolicy;
  }

  async signUp(input: RegisterInput): Promise<SignUpOutcome> {
    const { register } = await this.execute(RegisterDocument, { input });
    if (register.accepted) {
      return { kind: "accepted" };
    }
    const limited = register.userErrors.find((error) => error.code === "RATE_LIMITED");
    if (limited) {
      return { kind: "rateLimited", retryAfterSeconds: register.retryAfterSeconds ?? 60 };
    }
    const fields: FieldErrors = {};
    for (const error of register.userErrors) {
      const name = error.field?.[error.field.length - 1] ?? "form";
      fields[name] = { message: error.message, code: error.code };
    }
    return { kind: "invalid", fields };
  }

  /** Call on the person's click, never on page load: mail scanners open links too. */
  async confirm(token: string): Promise<ConfirmOutcome> {
    const { confirmAccount } = await this.execute(ConfirmAccountDocument, { token });
    if (confirmAccount.user) {
      return {
        kind: "confirmed",
        email: confirmAccount.user.email,
        confirmedAt: confirmAccount.user.confirmedAt ?? null,
      };
    }
    const [error] = confirmAccount.userErrors;
    const kind =
      error?.code === "TOKEN_EXPIRED" ? "expired" : error?.code === "TOKEN_SUPERSEDED" ? "superseded" : "invalid";
    return { kind, message: error?.message ?? "This link is not valid." };
  }

  async resendConfirmation(email: string): Promise<{ accepted: boolean; retryAfterSeconds: number | null }> {
    const { resendConfirmation } = await this.execute(ResendConfirmationDocument, { email });
    return {
      accepted: resendConfirmation.accepted,
      retryAfterSeconds: resendConfirmation.retryAfterSeconds ?? null,
    };
  }

  /** Signs in; with "COOKIE" (browsers) the session is a cookie, with "BEARER" a token to keep. */
  async signIn(email: string, password: string, delivery: "COOKIE" | "BEARER" = "COOKIE"): Promise<SignInOutcome> {
    const { signIn } = await this.execute(SignInDocument, { input: { email, password, delivery } });
    if (signIn.user) {
      return { kind: "signedIn", email: signIn.user.email, sessionToken: signIn.sessionToken ?? null };
    }
    const [error] = signIn.userErrors;
    const message = error?.message ?? "Signing in did not work.";
    switch (error?.code) {
      case "RATE_LIMITED":
        return { kind: "rateLimited", retryAfterSeconds: signIn.retryAfterSeconds ?? 1, message };
      case "INVALID_CREDENTIALS":
        return { kind: "invalidCredentials", message };
      case "EMAIL_NOT_CONFIRMED":
        return { kind: "emailNotConfirmed", message };
      default:
        return { kind: "invalid", message };
    }
  }

  /** The signed-in person with their sessions, or null when not signed in. */
  async viewer(): Promise<Viewer> {
    const { viewer } = await this.execute(ViewerDocument, {});
    return viewer;
  }

  /** Ends this session (and clears the cookie). */
  async signOut(): Promise<boolean> {
    const { signOut } = await this.execute(SignOutDocument, {});
    return signOut.signedOut;
  }

  /** Ends one of the viewer's sessions, e.g. a lost phone's. */
  async revokeSession(id: string): Promise<boolean> {
    const { revokeSession } = await this.execute(RevokeSessionDocument, { id });
    return revokeSession.revoked;
  }

  /** Emails a reset link if the address has an account; the answer is the same for every address. */
  async requestPasswordReset(email: string): Promise<{ accepted: boolean; retryAfterSeconds: number | null }> {
    const { requestPasswordReset } = await this.execute(RequestPasswordResetDocument, { email });
    return {
      accepted: requestPasswordReset.accepted,
      retryAfterSeconds: requestPasswordReset.retryAfterSeconds ?? null,
    };
  }

  /** Call on the person's submit, never on page load: mail scanners open links too. */
  async resetPassword(token: string, newPassword: string): Promise<ResetOutcome> {
    const { resetPassword } = await this.execute(ResetPasswordDocument, { input: { token, newPassword } });
    if (resetPassword.user) {
      return { kind: "changed", email: resetPassword.user.email };
    }
    const [error] = resetPassword.userErrors;
    const message = error?.message ?? "The password was not changed.";
    switch (error?.code) {
      case "TOKEN_EXPIRED":
        return { kind: "expired", message };
      case "TOKEN_SUPERSEDED":
        return { kind: "superseded", message };
      case "TOKEN_USED":
        return { kind: "used", message };
      case "TOKEN_INVALID":
        return { kind: "invalid", message };
      default:
        return { kind: "password", message };
    }
  }

  /** Changes the signed-in person's password; other sessions end. */
  async changePassword(currentPassword: string, newPassword: string): Promise<{ changed: boolean; message: string | null }> {
    const { changePassword } = await this.execute(ChangePasswordDocument, { input: { currentPassword, newPassword } });
    if (changePassword.user) {
      return { changed: true, message: null };
    }
    return { changed: false, message: changePassword.userErrors[0]?.message ?? "The password was not changed." };
  }
}
